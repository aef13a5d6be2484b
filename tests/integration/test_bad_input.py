"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import dramatiq
import pytest

from jobcore.errors import InvalidArguments, UnknownActor, UnserializableArguments
from tests.conftest import ROOT, TEST_ENV, wait_for
from tests.support.ledger import count, error_rows, run_row, wait_status

pytestmark = pytest.mark.integration


def _queue_len(redis_client, broker, queue="default"):
    return redis_client.hlen(f"{broker.namespace}:{queue}.msgs")


def test_send_refuses_unknown_actor_bad_arguments_and_unserialisable(broker, redis_client):
    from actors.examples import example, example_with_args

    with pytest.raises(UnknownActor, match="'GHOST'"):
        broker.enqueue(dramatiq.Message(queue_name="default", actor_name="GHOST", args=(), kwargs={},
                                        options={}))
    with pytest.raises(InvalidArguments, match="missing a required argument: 'b'"):
        example_with_args.send(1)
    with pytest.raises(InvalidArguments, match="unexpected keyword argument 'colour'"):
        example_with_args.send(1, 2, colour="red")
    with pytest.raises(UnserializableArguments, match="not JSON serializable"):
        example.send({1, 2})
    # Nothing was recorded or enqueued for any of them.
    assert count("SELECT count(*) FROM job_runs") == 0
    assert _queue_len(redis_client, broker) == 0


def _raw_message(actor_name: str, args: list, kwargs: dict) -> tuple[str, bytes]:
    rid = str(uuid.uuid4())
    payload = {"queue_name": "default", "actor_name": actor_name, "args": args, "kwargs": kwargs,
               "options": {"redis_message_id": rid}, "message_id": str(uuid.uuid4()),
               "message_timestamp": 1_700_000_000_000}
    return rid, json.dumps(payload).encode()


def test_malformed_and_unknown_messages_are_dead_lettered_with_reason(broker, start_worker, redis_client):
    from actors.examples import example

    ns = broker.namespace
    # 1. not even JSON; 2. JSON that is not a message; 3. an actor this worker lacks;
    # 4. a message whose arguments do not fit the actor (bypassing send-time checks).
    garbage_id = str(uuid.uuid4())
    not_message_id = str(uuid.uuid4())
    ghost_id, ghost = _raw_message("GHOST_ACTOR", [], {})
    badargs_id, badargs = _raw_message("EXAMPLE_WITH_ARGS", [1], {})
    badargs_message_id = json.loads(badargs)["message_id"]
    for rid, data in [(garbage_id, b"\x00\xffnot json at all"),
                      (not_message_id, json.dumps({"options": {"redis_message_id": not_message_id}}).encode()),
                      (ghost_id, ghost), (badargs_id, badargs)]:
        broker.do_enqueue("default", rid, data)

    worker = start_worker()
    ok = example.send("still alive")
    assert wait_status(ok.message_id, "FINISHED")["resolution"] == "COMPLETED"
    wait_for(lambda: count("SELECT count(*) FROM rejected_messages") >= 3, 15, what="3 rejected messages")
    wait_for(lambda: redis_client.zcard(f"{ns}:default.XQ") == 4, 15, what="4 dead-lettered messages")
    assert worker.alive()

    reasons = {r for r, in _rows("SELECT reason FROM rejected_messages")}
    assert any(r.startswith("undecodable message") for r in reasons)
    assert "no actor named 'GHOST_ACTOR' on this worker" in reasons
    dead = {m.decode() for m in redis_client.zrange(f"{ns}:default.XQ", 0, -1)}
    assert {garbage_id, not_message_id, ghost_id, badargs_id} == dead
    # The run with bad arguments is closed as ERROR with the reason, never STARTED.
    row = wait_status(badargs_message_id, "FINISHED")
    assert row["resolution"] == "ERROR" and row["started_at"] is None
    assert "missing a required argument: 'b'" in error_rows(badargs_message_id)[0]["message"]


def _rows(sql):
    from sqlalchemy import text

    from jobcore.db import control_engine

    with control_engine().connect() as conn:
        return conn.execute(text(sql)).all()


@pytest.mark.parametrize("value,problem", [
    ("nul\x00inside", "NUL character"),
    ("\ud800 lone surrogate", "unpaired surrogate"),
    (float("nan"), "NaN"),
    ({"nested": [1, float("inf")]}, "JSON has no NaN or Infinity"),
])
def test_send_refuses_a_value_the_ledger_cannot_store(broker, redis_client, value, problem):
    """A value jsonb cannot hold is refused at send(), naming the argument; nothing is
    enqueued and nothing recorded (on main the PENDING write failed inside a swallowed
    hook and the message was enqueued with no row)."""
    from actors.examples import example_with_args
    from tests.support.ledger import settle

    with pytest.raises(InvalidArguments, match=f"argument 'label' of EXAMPLE_WITH_ARGS .*{problem}"):
        example_with_args.send(1, 2, label=value)
    assert _queue_len(redis_client, broker) == 0
    assert redis_client.xlen(broker.keys.ledger_stream) == 0
    settle()
    assert count("SELECT count(*) FROM job_runs") == 0


def test_results_and_progress_above_their_limits_are_stored_truncated(broker, start_worker):
    """Results a job produces are never refused: an oversized one is stored as a marker
    with a preview (characters PostgreSQL cannot hold: tests/unit/test_ledger_recorder.py)."""
    from actors.examples import example

    start_worker(env={"MAX_RESULT_BYTES": "2048"})
    big = example.send("x" * 10_000)
    row = wait_status(big.message_id, "FINISHED")
    assert row["resolution"] == "COMPLETED"
    assert row["result"]["truncated"] is True and row["result"]["bytes"] > 10_000
    assert row["result"]["preview"].startswith('{"echo":"xxx')


def test_send_refuses_a_message_above_the_size_limit(broker, redis_client):
    from actors.examples import example
    from jobcore.errors import MessageTooLarge

    with pytest.raises(MessageTooLarge, match=r"message for EXAMPLE is 3[0-9,]+ bytes encoded; the limit is 262,144"):
        example.send("y" * 300_000)
    assert _queue_len(redis_client, broker) == 0
    assert redis_client.xlen(broker.keys.ledger_stream) == 0


def test_no_run_is_left_pending_under_a_racing_worker(broker, start_worker):
    """The naive after_enqueue INSERT left 1-5 of 210 runs PENDING forever; here none."""
    from actors.examples import example

    start_worker(threads=8)
    ids = [example.send(i).message_id for i in range(300)]
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 300, 60,
             what="300 finished runs")
    assert count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == 300
    assert count("SELECT count(*) FROM job_runs WHERE status = 'PENDING'") == 0
    assert run_row(ids[-1])["attempts"] == 1


@pytest.mark.parametrize("variable,url,masked", [
    ("REDIS_URL", "redis://:hunter2pw@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
    ("DATABASE_URL", "postgresql://root:hunter2pw@127.0.0.1:1/test", "postgresql://root:***@127.0.0.1:1/test"),
])
def test_worker_exits_with_one_clear_line_when_a_service_is_down(control_db, variable, url, masked):
    env = {**TEST_ENV, "PYTHONPATH": str(ROOT), variable: url}
    import os

    proc = subprocess.run([sys.executable, "-m", "dramatiq", "actors", "-p", "1", "-t", "1"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: cannot reach")]
    assert lines and masked in lines[0], proc.stderr[-2000:]
    assert "hunter2pw" not in proc.stderr + proc.stdout
