"""Every lifecycle path of a run, with a real `dramatiq actors` worker subprocess: the
rows the ledger ends with, as the workers' own drainer applies them."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.conftest import wait_for
from tests.support.ledger import count, error_rows, revoke, run_row, settle, wait_status

pytestmark = pytest.mark.integration


def test_completed_with_result_and_redacted_args(broker, start_worker):
    from actors.examples import example_with_args
    from jobcore.context import job_context

    start_worker()
    with job_context(tenant_id=4, request_id="req-1"):
        msg = example_with_args.send(2, 3, label="total", api_key="sk-live-SECRET")
    row = wait_status(msg.message_id, "FINISHED")
    assert row["resolution"] == "COMPLETED"
    assert row["result"] == {"label": "total", "result": 5, "authenticated": True}
    assert row["attempts"] == 1
    assert row["tenant_id"] == 4
    assert row["context"] == {"tenant_id": 4, "request_id": "req-1"}
    assert row["kwargs"] == {"label": "total", "api_key": "[REDACTED]"}
    assert row["enqueued_at"] <= row["started_at"] <= row["finished_at"]
    assert "sk-live-SECRET" not in json.dumps(row, default=str)
    assert error_rows(msg.message_id) == []


def test_error_after_three_attempts_with_backoff(broker, start_worker):
    from actors.examples import example_error

    start_worker()
    msg = example_error.send("it broke")
    row = wait_status(msg.message_id, "FINISHED", timeout=40)
    assert row["resolution"] == "ERROR"
    assert row["attempts"] == 3
    errors = error_rows(msg.message_id)
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    assert [e["will_retry"] for e in errors] == [True, True, False]
    assert {e["exception_type"] for e in errors} == {"actors.examples.ExampleError"}
    assert all("it broke" in e["message"] and "raise ExampleError" in e["traceback"] for e in errors)
    assert len({e["fingerprint"] for e in errors}) == 1
    gap1 = (errors[1]["created_at"] - errors[0]["created_at"]).total_seconds()
    gap2 = (errors[2]["created_at"] - errors[1]["created_at"]).total_seconds()
    assert 2.0 <= gap1 <= 4.0, gap1
    assert 4.0 <= gap2 <= 8.0, gap2
    assert count("SELECT count(*) FROM job_runs") == 1  # a retry is not a new run


def test_expired_message_is_never_started(broker, start_worker):
    from actors.examples import example

    msg = example.send_with_options(args=("late",), max_age=300)
    settle()  # no worker runs yet to drain the buffered PENDING
    assert run_row(msg.message_id)["status"] == "PENDING"
    time.sleep(0.6)  # no worker yet: the message ages past its limit in the queue
    start_worker()
    row = wait_status(msg.message_id, "FINISHED")
    assert row["resolution"] == "EXPIRED"
    assert row["started_at"] is None
    assert row["attempts"] == 0


def test_revoke_queued_run_never_starts(broker, start_worker, redis_client):
    from actors.examples import example_progress

    msg = example_progress.send(2, 0.05)
    result = revoke(msg.message_id)
    assert result.outcome == "revoked"
    row = run_row(msg.message_id)
    assert (row["status"], row["resolution"]) == ("FINISHED", "REVOKED")
    worker = start_worker()
    wait_for(lambda: redis_client.llen(broker.keys.queue("default")) == 0
             and redis_client.hlen(broker.keys.messages("default")) == 0, 15,
             what="the revoked message to be consumed and acked")
    time.sleep(0.5)
    row = run_row(msg.message_id)
    assert (row["status"], row["resolution"]) == ("FINISHED", "REVOKED")
    assert row["started_at"] is None and row["attempts"] == 0 and row["progress"] is None
    assert "its run is revoked" in worker.log
    assert count("SELECT count(*) FROM operator_actions WHERE action = 'revoke' AND operator = 'test' "
                 "AND message_id = :m", m=msg.message_id) == 1


def test_revoke_running_run_is_interrupted(broker, start_worker):
    from actors.examples import example_progress

    start_worker()
    msg = example_progress.send(100, 0.1)  # ~10 s of work
    wait_status(msg.message_id, "STARTED")
    time.sleep(0.5)
    t0 = time.monotonic()
    assert revoke(msg.message_id).outcome == "revoking"
    row = wait_status(msg.message_id, "FINISHED", timeout=10)
    assert time.monotonic() - t0 < 3
    assert row["resolution"] == "REVOKED"
    assert row["revoke_requested_at"] is not None
    assert row["progress"]["fraction"] < 0.5
    assert revoke(msg.message_id).outcome == "already-finished"


def test_worker_sigkill_mid_job_is_redelivered_and_completes_once(broker, start_worker):
    from actors.examples import example_progress

    first = start_worker()
    msg = example_progress.send(8, 0.25)  # ~2 s
    wait_status(msg.message_id, "STARTED")
    first.kill()  # SIGKILL: no ack, no requeue, heartbeat stops
    killed_at = time.monotonic()
    start_worker()
    row = wait_status(msg.message_id, "FINISHED", timeout=60)
    redelivered_after = time.monotonic() - killed_at
    assert row["resolution"] == "COMPLETED"
    assert row["attempts"] == 2  # same row, one more attempt
    assert row["result"] == 8
    assert count("SELECT count(*) FROM job_runs") == 1
    # heartbeat timeout 3 s + sweep 0.5 s + lease takeover 1 s + the job itself ~2 s
    assert redelivered_after < 20, redelivered_after


def _redeliver(broker, message) -> None:
    """The same message again under a new Redis id, written straight into the queue as a
    lost ack or a stale producer would leave it (not through the platform's send)."""
    copy = message.copy(options={**message.options, "redis_message_id": str(uuid.uuid4())})
    broker.do_enqueue("default", copy.options["redis_message_id"], copy.encode())


def test_redelivery_of_a_finished_run_is_skipped(broker, start_worker, redis_client):
    from tests.support.effect_actors import counted, executions_key

    worker = start_worker("tests.support.effect_actors")
    msg = counted.send()
    row = wait_status(msg.message_id, "FINISHED")
    _redeliver(broker, msg)
    wait_for(lambda: redis_client.hlen(broker.keys.messages("default")) == 0, 15, what="redelivery consumed")
    wait_for(lambda: "already finished" in worker.log, 10, what="the skip to be logged")
    assert int(redis_client.hget(executions_key(), msg.message_id)) == 1  # ran once, not twice
    again = run_row(msg.message_id)
    assert again["attempts"] == 1 and again["finished_at"] == row["finished_at"]
    assert count("SELECT count(*) FROM job_runs") == 1


def test_redelivery_after_the_dedupe_window_is_refused_by_postgres(broker, start_worker, redis_client):
    """Redis forgot the run (its finished marker was pruned, or Redis lost its data):
    the worker asks PostgreSQL before starting an unknown run."""
    from tests.support.effect_actors import counted, executions_key

    start_worker("tests.support.effect_actors")
    msg = counted.send()
    wait_status(msg.message_id, "FINISHED")
    redis_client.delete(broker.keys.ledger_finished, broker.keys.ledger_runs)
    _redeliver(broker, msg)
    wait_for(lambda: redis_client.hlen(broker.keys.messages("default")) == 0, 15, what="redelivery consumed")
    time.sleep(0.3)
    assert int(redis_client.hget(executions_key(), msg.message_id)) == 1


def test_sending_a_known_message_id_again_enqueues_nothing(broker, start_worker, redis_client):
    """A producer (or a redelivered dispatcher) re-sending a message id the ledger knows."""
    from tests.support.effect_actors import counted, executions_key

    msg = counted.send()
    again = counted.message().copy(message_id=msg.message_id)
    broker.enqueue(again)
    assert redis_client.llen(broker.keys.queue("default")) == 1  # the second send wrote nothing
    start_worker("tests.support.effect_actors")
    wait_status(msg.message_id, "FINISHED")
    broker.enqueue(counted.message().copy(message_id=msg.message_id))  # after it finished
    time.sleep(0.5)
    assert int(redis_client.hget(executions_key(), msg.message_id)) == 1
