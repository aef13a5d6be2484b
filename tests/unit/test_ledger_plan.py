"""The drainer's batching (``ledger.store.plan``): applying a chunk group by group, one
statement per kind, must have the effect of applying its events one by one. Checked with
the ledger's rules (``ledger.model``), which each batched statement implements per row."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import model
from ledger.events import (
    AttemptError,
    AttemptFailed,
    Event,
    Finished,
    Pending,
    Progress,
    Rejected,
    RunRef,
    Started,
    decode,
    encode,
)
from ledger.store import plan

pytestmark = pytest.mark.unit

RUNS = [RunRef(f"m{i}", "EXAMPLE", "default", None, 1.0) for i in range(3)]


def events() -> st.SearchStrategy[Event]:
    run = st.sampled_from(RUNS)
    attempt = st.integers(1, 4)
    at = st.floats(1, 100)
    error = st.builds(AttemptError, attempt, st.just("E"), st.just("boom"), st.just(""), st.just("f"),
                      st.booleans())
    return st.one_of(
        st.builds(Pending, run, at, st.just([1]), st.just({}), st.just({})),
        st.builds(Started, run, at, st.just("w"), attempt),
        st.builds(AttemptFailed, run, at, at, error),
        st.builds(Finished, run, at, st.sampled_from(["COMPLETED", "ERROR", "REVOKED", "EXPIRED"]), attempt,
                  st.one_of(st.none(), st.integers()), st.one_of(st.none(), at), st.just("w"),
                  st.one_of(st.none(), error)),
        st.builds(Progress, run.map(lambda r: r.message_id), at, st.integers()),
        st.builds(Rejected, st.just("default"), st.none(), run.map(lambda r: r.message_id), st.just("A"),
                  st.just("bad"), st.just("{}"), at),
    )


def sequential(evs: list[Event]) -> dict[str, model.Row]:
    rows: dict[str, model.Row] = {}
    for e in evs:
        mid = e.message_id if isinstance(e, (Progress, Rejected)) else e.run.message_id
        row = model.apply(rows.get(mid), e)
        if row is not None:
            rows[mid] = row
    return rows


def batched(evs: list[Event]) -> dict[str, model.Row]:
    """What the statements of each group do: kind by kind, every row independently."""
    rows: dict[str, model.Row] = {}
    for group in plan(evs):
        finished: list[Event] = []
        for f in group.finished.values():
            created = group.created.get(f.run.message_id)
            finished += [created, f] if created is not None else [f]  # one row insert in SQL
        ordered: list[Event] = [*group.pending.values(), *group.started.values(), *group.progress.values(),
                                *group.failed.values(), *finished]
        if group.rejected is not None:
            ordered.append(group.rejected)
        for e in ordered:
            mid = e.message_id if isinstance(e, (Progress, Rejected)) else e.run.message_id
            row = model.apply(rows.get(mid), e)
            if row is not None:
                rows[mid] = row
    return rows


def _comparable(rows: dict[str, model.Row]) -> dict[str, tuple]:
    # started_at of a STARTED folded into its FINISHED is the one field batching may set
    # differently for a stale redelivery; every other column must agree exactly.
    return {m: (r.status, r.resolution, r.attempts, r.retry_at is None, r.result, r.progress, r.args,
                tuple(a for a, _ in r.errors)) for m, r in rows.items()}


@settings(max_examples=500)
@given(st.lists(events(), max_size=25))
def test_batched_groups_apply_like_one_event_at_a_time(evs):
    assert _comparable(batched(evs)) == _comparable(sequential(evs))


@given(events())
def test_the_codec_round_trips_every_event(event):
    raw = encode(event)
    attempt = event.attempt if isinstance(event, Started) else None
    assert decode(raw, attempt) == event


def test_a_short_run_drained_at_once_becomes_one_row_insert():
    run = RUNS[0]
    [group] = plan([Pending(run, 1, [], {}, {}), Started(run, 2, "w", 1), Finished(run, 3, "COMPLETED", 1)])
    assert not group.pending and not group.started and list(group.created) == ["m0"]
    assert group.finished["m0"].started_at == 2 and group.finished["m0"].worker_id == "w"


def test_a_started_entry_with_a_bad_attempt_number_is_refused_not_fatal():
    from jobcore.errors import LedgerError
    from ledger.events import decode_many

    raw = encode(Started(RUNS[0], 1.0, "w", 1))
    [bad] = decode_many([raw], [-1])
    assert isinstance(bad, LedgerError)


def test_a_result_nested_too_deeply_is_stored_cut_not_lost():
    from jobcore.redaction import Redactor
    from ledger.recorder import Recorder

    deep: list = []
    for _ in range(5000):
        deep = [deep]
    stored = Recorder(lambda: Redactor(("password",))).result(deep)
    assert "nested too deeply" in json.dumps(stored)
