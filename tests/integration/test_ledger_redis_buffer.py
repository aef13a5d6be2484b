"""LEDGER_MODE=redis: what the Redis ledger buffer guarantees, and what it cannot.

The README ("Ledger modes") promises: every transition is written to Redis atomically with
the broker operation it belongs to, so a worker crash loses none; a loss of Redis's own
data loses the transitions not yet flushed, together with the messages themselves.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import wait_for
from tests.support.ledger import count, run_row, settle

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("ledger_mode", ["redis"], indirect=True)]


def spool(broker) -> list[dict]:
    return [json.loads(raw) for raw in broker.client.lrange(f"{broker.namespace}:ledger:spool", 0, -1)]


def test_pending_is_written_with_the_message_in_one_step(broker, ledger_mode):
    from actors.examples import example_with_args

    msg = example_with_args.send(1, 2, label="x", api_key="sk-live-SECRET")
    # No PostgreSQL write happened on send; the run is in the buffer, next to its message.
    assert run_row(msg.message_id) is None
    events = [e for e in spool(broker) if e["params"].get("message_id") == msg.message_id]
    assert [e["kind"] for e in events] == ["pending"]
    assert broker.client.hexists(f"{broker.namespace}:default.msgs", msg.options["redis_message_id"])
    assert "sk-live-SECRET" not in json.dumps(events)
    settle()
    row = run_row(msg.message_id)
    assert (row["status"], row["attempts"]) == ("PENDING", 0)
    assert row["kwargs"] == {"label": "x", "api_key": "[REDACTED]"}
    assert spool(broker) == []


def test_a_failed_enqueue_records_nothing(broker, ledger_mode, monkeypatch):
    """The PENDING event travels in the enqueue script: when that fails, neither exists."""
    import redis

    from actors.examples import example
    from jobcore.errors import ServiceUnavailable

    def broken(*args, **kwargs):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(type(broker.platform_script), "__call__", broken)
    with pytest.raises(ServiceUnavailable):
        example.send("never")
    monkeypatch.undo()
    assert spool(broker) == []
    assert broker.client.hlen(f"{broker.namespace}:default.msgs") == 0
    settle()
    assert count("SELECT count(*) FROM job_runs") == 0


def test_worker_sigkill_loses_no_transition(broker, start_worker, ledger_mode):
    """Kill every worker process in the middle of a stream of jobs: after a new worker
    takes over, every run is FINISHED exactly once, and the killed attempts are counted."""
    from actors.examples import example_progress

    first = start_worker(processes=2, threads=4)
    ids = [example_progress.send(4, 0.1).message_id for _ in range(120)]  # ~6 s of work
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") >= 20, 60,
             what="some runs finished before the crash")
    first.kill()
    start_worker(processes=2, threads=4)
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 120, 90,
             what="every run to finish after the crash")
    rows = [run_row(m) for m in ids]
    assert {r["resolution"] for r in rows} == {"COMPLETED"}
    assert all(r["started_at"] is not None and r["result"] == 4 for r in rows)
    assert count("SELECT count(*) FROM job_runs") == 120
    # The attempts the crash interrupted were recorded (their STARTED was in Redis).
    assert count("SELECT count(*) FROM job_runs WHERE attempts >= 2") >= 1
    wait_for(lambda: spool(broker) == [], 10, what="buffer drained")


def test_losing_redis_data_before_the_flush_loses_those_runs(broker, ledger_mode):
    """The documented limit: a transition lives only in Redis until it is flushed, so if
    Redis itself loses its data (no AOF) in that window, the run is gone with its message."""
    from actors.examples import example

    msg = example.send("lost with Redis")
    for key in broker.client.scan_iter(match=f"{broker.namespace}:*"):
        broker.client.delete(key)
    settle()
    assert run_row(msg.message_id) is None
