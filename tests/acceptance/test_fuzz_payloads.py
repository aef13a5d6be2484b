"""Garbage pushed straight into a queue, as a foreign or broken producer would write it.

Hypothesis builds payloads (truncated JSON, invalid UTF-8, wrong types in every field and
option, unknown options and actors, arguments that do not bind, extreme timestamps,
huge strings, deep nesting, a payload copied under a second Redis id) and writes them
with ``broker.do_enqueue`` (raw bytes, no send-time checks). A real worker process
consumes them. Every batch must end with:

* the worker alive, no consumer or worker thread crashed (its log says so if one did);
* every message either processed (its ``job_runs`` row FINISHED) or recorded with a
  reason (a ``rejected_messages`` row for its Redis id, and the id in the dead letters);
* nothing in flight: the queue, its delay queue, their payload hashes and the worker's
  ack sets are empty; no ledger event was refused by PostgreSQL (``ledger_dead_events``).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from ledger.operations import dead_letters
from ledger.reconcile import present_message_ids
from tests.conftest import wait_for
from tests.support.ledger import count, settle

pytestmark = pytest.mark.acceptance

QUEUE = "default"
BATCH = 40
BATCHES = 4  # generated; plus one explicit batch covering every category
# Fast retries and stuck-fetch checks; reconciliation off, so that a run the worker loses
# is seen as lost instead of being re-sent a minute later.
WORKER_ENV = {"MIN_BACKOFF_MS": "50", "MAX_BACKOFF_MS": "200", "STUCK_FETCH_GRACE_MS": "1000",
              "MAX_AGE_MS": "600000", "RECONCILE_INTERVAL_MS": "3600000"}
# Lines a worker logs when one of its threads died, dropped a message on the floor, or a
# background loop (reconciler, stuck-fetch check, ledger drain) failed on what it read.
CRASH_MARKERS = ("Consumer encountered an unexpected error", "Exception in thread", "found a bug in Dramatiq",
                 "Unhandled error during post_process_message", "reconciler failed", "stuck-fetch-check failed",
                 "orphan-sweeper failed", "Ledger drain failed", "log record withheld")


class Marker:
    """Stands for a value filled in at push time (fresh ids, the current time)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


RID, MID, NOW = Marker("RID"), Marker("MID"), Marker("NOW")

# Actors whose bodies are safe with any arguments (no sleeping on a garbage duration).
REAL_ACTORS = ("EXAMPLE", "EXAMPLE_ERROR", "EXAMPLE_WITH_ARGS")
ACTOR_NAMES = st.one_of(
    st.sampled_from(REAL_ACTORS),
    st.sampled_from(["GHOST", "example", "EXAMPLE ", "", "EXAMPLE\x00", "EXAMPLE\ud800", "É" * 300]),
    st.text(max_size=12),
    st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2),
)
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10**40, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=16),
    st.sampled_from(["\x00", "\ud800", "password=hunter2", "soon", "-1", "EXAMPLE", "default"]),
)
JSON = st.recursive(LEAVES, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12)
KNOWN_OPTIONS = ("eta", "retries", "max_retries", "min_backoff", "max_backoff", "max_age", "time_limit",
                 "due_at_ms", "ledger_tracked", "job_context", "scheduled_at", "schedule_tick_id", "schedule_name",
                 "retry_of", "throws", "retry_when", "retry_on_timeout", "on_success", "on_failure", "pipe_target",
                 "pipe_ignore", "redis_message_id", "store_result", "traceback")
CONTEXTS = st.one_of(
    st.fixed_dictionaries({"tenant_id": st.one_of(st.none(), st.integers(), st.text(max_size=4), st.booleans(),
                                                  st.floats())},
                          optional={"extra": JSON, "request_id": JSON, "user_id": JSON}),
    JSON,
)
OPTION_VALUES = st.one_of(JSON, CONTEXTS)
OPTIONS = st.builds(lambda extra: {"redis_message_id": RID, **extra},
                    st.dictionaries(st.one_of(st.sampled_from(KNOWN_OPTIONS), st.text(max_size=10)), OPTION_VALUES,
                                    max_size=3))
TIMESTAMPS = st.one_of(st.just(NOW), st.sampled_from([0, -1, -10**15, 10**15, 10**20, 1.5, "soon", None, True]),
                       st.integers())
ENVELOPE_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")


@st.composite
def envelopes(draw: Any) -> dict[str, Any]:
    """A message-shaped JSON object, possibly with one field corrupted, dropped or added."""
    env: dict[str, Any] = {
        "queue_name": QUEUE, "actor_name": draw(ACTOR_NAMES),
        "args": draw(st.lists(JSON, max_size=3)), "kwargs": draw(st.dictionaries(st.text(max_size=8), JSON,
                                                                                 max_size=3)),
        "options": draw(OPTIONS), "message_id": MID, "message_timestamp": draw(TIMESTAMPS),
    }
    mutation = draw(st.sampled_from(["none", "none", "replace", "drop", "add"]))
    name = draw(st.sampled_from(ENVELOPE_FIELDS))
    if mutation == "replace":
        env[name] = draw(JSON)
    elif mutation == "drop":
        del env[name]
    elif mutation == "add":
        env[draw(st.text(max_size=8))] = draw(JSON)
    return env


@dataclass(frozen=True)
class Spec:
    """How to build one payload: ``kind`` and its parameters."""

    kind: str
    envelope: dict[str, Any] | None = None
    raw: bytes = b""
    size: int = 0
    fraction: float = 0.0


SPECS = st.one_of(
    st.builds(Spec, st.just("envelope"), envelopes()),
    st.builds(Spec, st.just("envelope"), envelopes()),
    st.builds(Spec, st.just("truncated"), envelopes(), fraction=st.floats(0, 1)),
    st.builds(Spec, st.just("flipped"), envelopes(), fraction=st.floats(0, 1)),
    st.builds(Spec, st.just("raw"), raw=st.binary(max_size=40)),
    st.builds(Spec, st.just("toplevel"), st.builds(lambda v: {"value": v}, JSON)),
    st.builds(Spec, st.just("huge"), size=st.integers(50_000, 1_200_000)),
    st.builds(Spec, st.just("nested"), size=st.integers(20, 3000), fraction=st.floats(0, 0.99)),
    st.builds(Spec, st.just("bigint"), size=st.integers(4000, 6000)),
    st.builds(Spec, st.just("copy")),
)


def _fill(env: dict[str, Any], rid: str, mid: str) -> dict[str, Any]:
    out = dict(env)
    for key, value in out.items():
        if value is MID:
            out[key] = mid
        elif value is NOW:
            out[key] = int(time.time() * 1000)
    if isinstance(out.get("options"), dict):
        out["options"] = {k: (rid if v is RID else v) for k, v in out["options"].items()}
    return out


def _good(actor: str, args: str, rid: str, mid: str, kwargs: str = "{}", option: str = "") -> bytes:
    """A well-formed payload, written as text (so ``args`` may be JSON no encoder produces)."""
    return (f'{{"queue_name":"default","actor_name":"{actor}","args":{args},"kwargs":{kwargs},'
            f'"options":{{{option}"redis_message_id":"{rid}"}},"message_id":"{mid}",'
            f'"message_timestamp":{int(time.time() * 1000)}}}').encode()


def build(spec: Spec, rid: str, mid: str, previous: bytes | None) -> bytes:
    """The payload bytes of ``spec`` for Redis id ``rid`` and message id ``mid``."""
    if spec.kind in ("envelope", "truncated", "flipped"):
        assert spec.envelope is not None
        data = json.dumps(_fill(spec.envelope, rid, mid)).encode()
        cut = int(len(data) * spec.fraction)
        if spec.kind == "truncated":
            return data[:cut]
        if spec.kind == "flipped":
            return data[:cut] + b"\xff" + data[cut + 1:]
        return data
    if spec.kind == "raw":
        return spec.raw
    if spec.kind == "toplevel":
        assert spec.envelope is not None
        return json.dumps(spec.envelope["value"]).encode()
    if spec.kind == "huge":
        return _good("EXAMPLE", json.dumps(["x" * spec.size]), rid, mid)
    if spec.kind == "nested":
        deep = "[" * spec.size + "]" * spec.size
        where = int(spec.fraction * 4)
        if where == 0:
            return _good("EXAMPLE", "[" + deep + "]", rid, mid)
        if where == 1:
            return _good("EXAMPLE", "[]", rid, mid, kwargs='{"value":' + deep + "}")
        if where == 2:
            return _good("EXAMPLE", "[]", rid, mid, option=f'"deep":{deep},')
        return deep.encode()
    if spec.kind == "bigint":
        return _good("EXAMPLE_WITH_ARGS", "[" + "9" * spec.size + ", 1]", rid, mid)
    if spec.kind == "copy" and previous is not None:
        return previous  # the same payload under a second Redis id (its options name the first)
    return _good("EXAMPLE", "[\"plain\"]", rid, mid)


def _env(**fields: Any) -> Spec:
    base = {"queue_name": QUEUE, "actor_name": "EXAMPLE", "args": ["x"], "kwargs": {},
            "options": {"redis_message_id": RID}, "message_id": MID, "message_timestamp": NOW}
    options = fields.pop("options", {})
    base.update(fields)
    base["options"] = {**base["options"], **options} if isinstance(options, dict) else options
    return Spec("envelope", base)


# One of each hole named in the issue, so every run covers them whatever Hypothesis draws.
EXPLICIT = [
    _env(), _env(actor_name="EXAMPLE_ERROR"), _env(actor_name="EXAMPLE_WITH_ARGS", args=[1]),
    _env(actor_name="EXAMPLE_WITH_ARGS", args=["a", 2]), _env(actor_name="GHOST_ACTOR"),
    _env(actor_name="G" * 5000), _env(actor_name=7), _env(actor_name="EXAMPLE\x00"),
    _env(options={"retries": "x"}), _env(options={"eta": "soon"}), _env(options={"max_age": -1}),
    _env(options={"eta": 10**18}), _env(options={"retries": 10**30}), _env(options={"max_retries": "many"}),
    _env(actor_name="EXAMPLE_ERROR", options={"throws": "ValueError"}),
    _env(actor_name="EXAMPLE_ERROR", options={"retry_when": "always", "min_backoff": "fast"}),
    _env(options={"time_limit": "1s"}), _env(options={"job_context": {"tenant_id": "acme"}}),
    _env(options={"job_context": {"tenant_id": 10**12}}), _env(options={"job_context": "tenant=3"}),
    _env(options={"job_context": {"extra": 5}}), _env(options={"scheduled_at": 12}),
    _env(options={"scheduled_at": "2026-01-01T00:00:00"}), _env(options={"due_at_ms": "later"}),
    _env(options={"redis_message_id": 5}), _env(options={"redis_message_id": "not-this-one"}),
    _env(options={"pipe_target": "EXAMPLE"}), _env(options={"on_success": 3}), _env(options="opts"),
    _env(options={"unknown_option": {"nested": [1, 2]}}), _env(queue_name="other"), _env(queue_name=None),
    _env(args="abc"), _env(args={"a": 1}), _env(kwargs=["x"]), _env(message_id=5), _env(message_id="m" * 100),
    _env(message_id="\ud800"), _env(message_timestamp=-1), _env(message_timestamp=10**20),
    _env(message_timestamp="soon"), _env(message_timestamp=0), _env(surplus=1),
    Spec("truncated", _env().envelope, fraction=0.5), Spec("flipped", _env().envelope, fraction=0.3),
    Spec("raw", raw=b"\x00\xffnot json"), Spec("toplevel", {"value": [1, 2]}), Spec("huge", size=600_000),
    Spec("nested", size=150), Spec("nested", size=950), Spec("nested", size=5000),
    *(Spec("nested", size=950, fraction=f) for f in (0.3, 0.6, 0.9)), Spec("bigint", size=5000), Spec("copy"),
    _env(), Spec("copy"), _env(options={"retries": "x"}), Spec("copy"),
]


@dataclass
class Pushed:
    spec: Spec
    rid: str
    mid: str
    data: bytes


def _in_flight(broker: Any) -> dict[str, int]:
    client, keys = broker.client, broker.keys
    workers = [w.decode() for w in client.zrange(keys.workers, 0, -1)]
    state = {"ready": client.llen(keys.queue(QUEUE)), "payloads": client.hlen(keys.messages(QUEUE)),
             "delayed": client.llen(keys.delayed(QUEUE)), "delayed payloads": client.hlen(keys.delayed_messages(QUEUE)),
             "acked-not-done": sum(client.scard(keys.acks(w, q)) for w in workers for q in (QUEUE, f"{QUEUE}.DQ"))}
    return {k: int(v) for k, v in state.items() if v}


def _unresolved(broker: Any, pushed: list[Pushed]) -> list[Pushed]:
    from sqlalchemy import text

    from jobcore.db import control_engine

    with control_engine().connect() as conn:
        finished = {m for m, in conn.execute(text(
            "SELECT message_id FROM job_runs WHERE status = 'FINISHED' AND message_id = ANY(:m)"),
            {"m": [p.mid for p in pushed]})}
        rejected = {r for r, in conn.execute(text(
            "SELECT redis_message_id FROM rejected_messages WHERE redis_message_id = ANY(:r) AND reason <> ''"),
            {"r": [p.rid for p in pushed]})}
    dead = {d.decode() for d in broker.client.zrange(broker.keys.dead(QUEUE), 0, -1)}
    return [p for p in pushed if p.mid not in finished and not (p.rid in rejected and p.rid in dead)]


def _describe(p: Pushed) -> str:
    return f"{p.spec.kind} rid={p.rid} mid={p.mid}: {p.data[:300]!r}"


def test_garbage_in_the_queue_is_processed_or_recorded_and_nothing_stays_in_flight(broker: Any,
                                                                                  start_worker: Any) -> None:
    worker = start_worker(threads=4, env=WORKER_ENV)

    @settings(max_examples=BATCHES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.generate))
    @given(st.lists(SPECS, min_size=BATCH, max_size=BATCH))
    @example(EXPLICIT)
    def batch(specs: list[Spec]) -> None:
        pushed: list[Pushed] = []
        previous = None
        for spec in specs:
            rid, mid = str(uuid.uuid4()), str(uuid.uuid4())
            data = build(spec, rid, mid, previous)
            if spec.kind == "copy" and previous is not None:
                mid = pushed[-1].mid
            broker.do_enqueue(QUEUE, rid, data)
            pushed.append(Pushed(spec, rid, mid, data))
            previous = data

        def done() -> bool:
            if _in_flight(broker):
                return False
            settle()
            return not _unresolved(broker, pushed)

        try:
            wait_for(done, 30, interval=0.25, what="every message processed or recorded, nothing in flight")
        except AssertionError:
            left = _unresolved(broker, pushed)
            raise AssertionError(f"in flight: {_in_flight(broker)}; unresolved {len(left)}:\n"
                                 + "\n".join(_describe(p) for p in left[:10]) + f"\n--- worker log:\n"
                                 f"{worker.log[-6000:]}") from None
        assert worker.alive(), worker.log[-6000:]
        crashed = [m for m in CRASH_MARKERS if m in worker.log]
        assert not crashed, f"{crashed}\n{worker.log[-6000:]}"
        parked = count("SELECT count(*) FROM ledger_dead_events")
        assert parked == 0, "ledger events refused by PostgreSQL"
        # What operators and reconciliation read back copes with all of it.
        rows = dead_letters(broker, QUEUE)
        dead = {d.decode() for d in broker.client.zrange(broker.keys.dead(QUEUE), 0, -1)}
        assert {r["redis_id"] for r in rows} == dead
        assert {r["message_id"] for r in rows if isinstance(r["message_id"], str)} <= present_message_ids(
            broker.client, broker.keys)

    batch()
    # Both outcomes occurred: the fuzzer reached the actors and the rejection path.
    assert count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED' AND resolution = 'COMPLETED'") > 0
    assert count("SELECT count(*) FROM rejected_messages") > 0
