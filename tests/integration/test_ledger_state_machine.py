"""A Hypothesis state machine over the ledger's real write paths: events written the way
the platform writes them (the START script, the broker's ack/nack script, plain appends
for progress and rejections) into the real Redis stream, drained in chunks of random
size by two drainers with their own PostgreSQL connections, with chunks replayed,
redeliveries and operator revocations in between.

The model is :mod:`ledger.model` applied to the events in stream order. Invariants: a
FINISHED row never changes, attempts never go down, a replayed chunk is refused, and
after a final drain every row equals the model (no transition lost or applied twice).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import text

from jobcore.db import control_engine
from jobcore.keys import Keys
from ledger import model
from ledger.drainer import Drainer
from ledger.events import AttemptError, AttemptFailed, Event, Finished, Pending, Progress, Rejected, RunRef, Started
from ledger.events import encode as encode_event
from ledger.revocation import revoke
from ledger.store import PgStore
from ledger.stream import EventStream
from tests.conftest import NAMESPACE, TEST_ENV

pytestmark = pytest.mark.integration

RUNS = 3


class _Syncing:
    """The one strategy method :func:`revoke` needs: sync, through a real drainer."""

    def __init__(self, drainer: Drainer) -> None:
        self.drainer = drainer

    def sync(self, timeout_s: float = 30.0) -> None:
        self.drainer.drain_until(timeout_s=timeout_s)


class LedgerMachine(RuleBasedStateMachine):
    broker: Any

    @initialize()
    def setup(self) -> None:
        self.client = redis.Redis.from_url(TEST_ENV["REDIS_URL"])
        self.keys = Keys(NAMESPACE)
        for key in (self.keys.ledger_stream, self.keys.ledger_runs, self.keys.ledger_finished, self.keys.revoked):
            self.client.delete(key)
        with control_engine().begin() as conn:
            conn.exec_driver_sql("TRUNCATE job_runs, job_errors, rejected_messages, ledger_cursor RESTART IDENTITY "
                                 "CASCADE")
        self.stream = EventStream(self.client, self.keys)
        self.stores = [PgStore(TEST_ENV["DATABASE_URL"], NAMESPACE) for _ in range(2)]
        self.drainers = [Drainer(self.stream, store, chunk=3) for store in self.stores]
        self.runs = [RunRef(str(uuid.uuid4()), "EXAMPLE", "default", 7, time.time()) for _ in range(RUNS)]
        self.log: list[Event | tuple[str, str]] = []  # events in stream order, revocations, dropped STARTs
        self.attempt: dict[str, int] = {}
        self.started_entry: dict[str, tuple[bytes | None, int]] = {}
        self.finished_rows: dict[str, dict[str, Any]] = {}
        self.max_attempts: dict[str, int] = {}
        self.last_chunk: tuple[int, Any, Any, list[Any]] | None = None

    def teardown(self) -> None:
        for store in getattr(self, "stores", []):
            store.drop()

    # -- writers ---------------------------------------------------------------------
    def _ack(self, command: str, run: RunRef, event: Event, final: bool) -> None:
        b = self.broker
        entry, position = self.started_entry.pop(run.message_id, (None, -1)) if final else (None, -1)
        if entry is not None and self.client.xrange(self.keys.ledger_stream, entry, entry):
            # The final ack deletes the delivery's STARTED entry that is still in the
            # stream (the FINISHED event says it all): in stream order, it never happened.
            self.log[position] = ("dropped", run.message_id)
        b.platform_script(keys=b.platform_keys, args=[command, int(time.time() * 1000), "default", b.broker_id,
                                                      "no-such-redis-id", run.message_id, encode_event(event),
                                                      "1" if final else "0", entry or ""])
        self.log.append(event)

    @rule(i=st.integers(0, RUNS - 1))
    def send(self, i: int) -> None:
        run = self.runs[i]
        event = Pending(run, time.time(), [i, "x"], {"k": i}, {"tenant_id": 7})
        self.stream.append(encode_event(event))
        self.log.append(event)

    @rule(i=st.integers(0, RUNS - 1))
    def start_delivery(self, i: int) -> None:
        """A delivery (first, retried or redelivered): START decides, as in a worker."""
        run = self.runs[i]
        event = Started(run, time.time(), "w1")
        n, entry = self.stream.start(run.message_id, encode_event(event), 1, register=True)
        if n > 0:
            self.attempt[run.message_id] = n
            self.started_entry[run.message_id] = (entry, len(self.log))
            self.log.append(Started(run, event.at, "w1", n))

    @rule(i=st.integers(0, RUNS - 1), resolution=st.sampled_from(["COMPLETED", "REVOKED"]),
          result=st.one_of(st.none(), st.integers(), st.text(max_size=5)))
    def finish(self, i: int, resolution: str, result: Any) -> None:
        run = self.runs[i]
        n = self.attempt.get(run.message_id, 1)
        self._ack("ack", run, Finished(run, time.time(), resolution, n, result, None, "w1"), True)

    @rule(i=st.integers(0, RUNS - 1), final=st.booleans())
    def fail_attempt(self, i: int, final: bool) -> None:
        run = self.runs[i]
        n = self.attempt.get(run.message_id, 1)
        error = AttemptError(n, "E", "boom", "tb", "fp", not final)
        if final:
            self._ack("nack", run, Finished(run, time.time(), "ERROR", n, None, None, "w1", error), True)
        else:
            self._ack("ack", run, AttemptFailed(run, time.time(), time.time() + 2, error), False)

    @rule(i=st.integers(0, RUNS - 1), fraction=st.floats(0, 1))
    def progress(self, i: int, fraction: float) -> None:
        event = Progress(self.runs[i].message_id, time.time(), {"fraction": fraction})
        self.stream.append(encode_event(event))
        self.log.append(event)

    @rule(i=st.integers(0, RUNS - 1))
    def reject(self, i: int) -> None:
        run = self.runs[i]
        event = Rejected("default", None, run.message_id, run.actor_name, "bad", "{}", time.time())
        self.client.zadd(self.keys.ledger_finished, {run.message_id: time.time() * 1000})
        self.stream.append(encode_event(event))
        self.log.append(event)

    @rule(i=st.integers(0, RUNS - 1))
    def operator_revokes(self, i: int) -> None:
        run = self.runs[i]
        try:
            revoke(run.message_id, ledger=_Syncing(self.drainers[0]), client=self.client,  # type: ignore[arg-type]
                   keys=self.keys, control=control_engine(), operator="machine")
        except Exception as exc:  # a run with no row yet
            assert "no run with message id" in str(exc)
            return
        self.log.append(("revoke", run.message_id))

    # -- drainers ------------------------------------------------------------------------
    @rule(which=st.integers(0, 1), chunk=st.integers(1, 6))
    def drain(self, which: int, chunk: int) -> None:
        drainer = self.drainers[which]
        drainer.chunk = chunk
        cursor = drainer.store.cursor_position()
        epoch = drainer.stream.epoch()
        drainer.drain_once()
        self.last_chunk = (which, cursor, epoch, [])

    @precondition(lambda self: self.last_chunk is not None)
    @rule()
    def replay_the_last_chunk(self) -> None:
        """The same chunk again, from the cursor it was read at: the compare-and-set must
        refuse it (if the cursor has moved since), so nothing is applied twice."""
        assert self.last_chunk is not None
        which, cursor, epoch, _ = self.last_chunk
        store = self.stores[1 - which]
        now = store.cursor_position()
        if now == cursor:
            return  # that drain applied nothing: nothing to replay
        from ledger.store import Cursor

        assert store.apply(cursor, Cursor(epoch, now.last_id), []) is False

    # -- checks ---------------------------------------------------------------------------
    def _rows(self) -> dict[str, dict[str, Any]]:
        with control_engine().connect() as conn:
            rows = conn.execute(text("SELECT * FROM job_runs WHERE message_id = ANY(:m)"),
                                {"m": [r.message_id for r in self.runs]}).mappings().all()
            errors = conn.execute(text("SELECT r.message_id, e.attempt FROM job_errors e JOIN job_runs r "
                                       "ON r.id = e.job_run_id")).all()
        out = {r["message_id"]: dict(r) for r in rows}
        for mid, attempt in errors:
            out[mid].setdefault("error_attempts", set()).add(attempt)
        return out

    @invariant()
    def finished_is_final_and_attempts_never_go_down(self) -> None:
        if not hasattr(self, "runs"):
            return
        for mid, row in self._rows().items():
            assert (row["status"] == "FINISHED") == (row["resolution"] is not None)
            assert row["attempts"] >= self.max_attempts.get(mid, 0)
            self.max_attempts[mid] = row["attempts"]
            snapshot = {k: row[k] for k in ("status", "resolution", "finished_at", "result")}
            if mid in self.finished_rows:
                assert snapshot == self.finished_rows[mid], "a FINISHED run changed"
            elif row["status"] == "FINISHED":
                self.finished_rows[mid] = snapshot

    def check_against_model(self) -> None:
        self.drainers[1].drain_until(timeout_s=30)
        expected: dict[str, model.Row] = {}
        for item in self.log:
            if isinstance(item, tuple) and item[0] == "dropped":
                continue
            if isinstance(item, tuple):
                row = model.revoke_queued(expected.get(item[1]), time.time())
            else:
                mid = item.message_id if isinstance(item, (Progress, Rejected)) else item.run.message_id
                row = model.apply(expected.get(mid), item)
            if row is not None:
                expected[row.message_id] = row
        actual = self._rows()
        assert set(actual) == set(expected)
        for mid, want in expected.items():
            got = actual[mid]
            assert (got["status"], got["resolution"], got["attempts"]) == (want.status, want.resolution,
                                                                           want.attempts), (got, want)
            assert (got["retry_at"] is None) == (want.retry_at is None)
            assert got["result"] == want.result and got["progress"] == want.progress
            assert got["args"] == want.args and got["kwargs"] == want.kwargs
            assert got.get("error_attempts", set()) == {a for a, _ in want.errors}


def test_ledger_state_machine(clean_state, broker):
    LedgerMachine.broker = broker

    class Checked(LedgerMachine):
        def teardown(self) -> None:
            try:
                if hasattr(self, "runs"):
                    self.check_against_model()
            finally:
                super().teardown()

    runner = Checked.TestCase
    runner.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                               suppress_health_check=list(HealthCheck))
    runner().runTest()
