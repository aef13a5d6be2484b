"""The middleware stack in-process: dramatiq's StubBroker and the in-memory ledger, with
the platform's own ledger rules and codec. Every lifecycle path, without services."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker

from jobcore.context import job_context
from jobcore.errors import InvalidArguments
from ledger.progress import report_progress
from tests.support.stub import LedgerStubBroker, make_broker

pytestmark = pytest.mark.unit


@pytest.fixture()
def stub() -> Iterator[LedgerStubBroker]:
    broker = make_broker()
    yield broker
    broker.close()


def run_all(broker: LedgerStubBroker, queue: str = "default") -> None:
    worker = Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        broker.join(queue, fail_fast=False, timeout=20_000)
        worker.join()
    finally:
        worker.stop()


def declare(broker: LedgerStubBroker) -> dict[str, Any]:
    executions: dict[str, int] = {}

    @dramatiq.actor(broker=broker, actor_name="ADD")
    def add(a: int, b: int, *, api_key: str | None = None) -> int:
        return a + b

    @dramatiq.actor(broker=broker, actor_name="BOOM")
    def boom() -> None:
        raise RuntimeError("it broke, password=hunter2")

    @dramatiq.actor(broker=broker, actor_name="COUNT", store_result=False)
    def count(key: str) -> str:
        executions[key] = executions.get(key, 0) + 1
        return "not stored"

    @dramatiq.actor(broker=broker, actor_name="STEPS")
    def steps(n: int) -> int:
        for i in range(1, n + 1):
            report_progress(i / n, message=f"step {i}")
        return n

    return {"add": add, "boom": boom, "count": count, "steps": steps, "executions": executions}


def test_completed_run_with_result_context_and_redacted_arguments(stub):
    actors = declare(stub)
    with job_context(tenant_id=5, request_id="r1"):
        msg = actors["add"].send(2, 3, api_key="sk-SECRET")
    assert stub.ledger.rows[msg.message_id].status == "PENDING"
    run_all(stub)
    row = stub.ledger.rows[msg.message_id]
    assert (row.status, row.resolution, row.attempts, row.result) == ("FINISHED", "COMPLETED", 1, 5)
    assert row.tenant_id == 5 and row.context == {"tenant_id": 5, "request_id": "r1"}
    assert row.kwargs == {"api_key": "[REDACTED]"} and row.args == [2, 3]
    assert row.started_at is not None and row.finished_at is not None
    assert "sk-SECRET" not in json.dumps([e.__repr__() for e in stub.ledger.events])


def test_failed_attempts_are_retried_then_end_in_error_with_one_error_row_each(stub):
    actors = declare(stub)
    msg = actors["boom"].send()
    run_all(stub)
    row = stub.ledger.rows[msg.message_id]
    assert (row.status, row.resolution, row.attempts) == ("FINISHED", "ERROR", 3)
    assert [a for a, _ in row.errors] == [1, 2, 3]
    assert [e.will_retry for _, e in row.errors] == [True, True, False]
    assert all("hunter2" not in e.message and "hunter2" not in e.traceback for _, e in row.errors)
    assert len({e.fingerprint for _, e in row.errors}) == 1
    assert len(stub.dead_letters) == 1


def test_expired_message_never_starts(stub):
    actors = declare(stub)
    msg = actors["add"].send_with_options(args=(1, 1), max_age=1)
    import time

    time.sleep(0.01)
    run_all(stub)
    row = stub.ledger.rows[msg.message_id]
    assert (row.status, row.resolution, row.attempts, row.started_at) == ("FINISHED", "EXPIRED", 0, None)


def test_a_message_whose_arguments_do_not_bind_is_rejected_without_running(stub):
    actors = declare(stub)
    bad = actors["add"].message(1).copy(options={"ledger_tracked": 0})
    stub.queues["default"].put(bad.encode())  # as a stale producer would: not through send()
    stub.ledger.apply_raw(stub.ledger.pending_event(actors["add"].fn, bad))
    run_all(stub)
    row = stub.ledger.rows[bad.message_id]
    assert (row.status, row.resolution, row.started_at) == ("FINISHED", "ERROR", None)
    assert "missing a required argument: 'b'" in row.errors[0][1].message


def test_a_revoked_run_is_never_started(stub):
    actors = declare(stub)
    msg = actors["count"].send("k")
    stub.ledger.revoked.add(msg.message_id)
    run_all(stub)
    assert actors["executions"] == {}
    row = stub.ledger.rows[msg.message_id]
    assert (row.status, row.resolution, row.attempts) == ("FINISHED", "REVOKED", 0)


def test_a_redelivered_copy_of_a_finished_run_does_not_run_again(stub):
    actors = declare(stub)
    msg = actors["count"].send("k")
    run_all(stub)
    stub.queues["default"].put(msg.encode())  # the same message again (a lost ack)
    run_all(stub)
    assert actors["executions"] == {"k": 1}
    assert stub.ledger.rows[msg.message_id].attempts == 1


def test_store_result_false_keeps_the_result_out_of_the_ledger(stub):
    actors = declare(stub)
    msg = actors["count"].send("k")
    run_all(stub)
    assert stub.ledger.rows[msg.message_id].result is None


def test_progress_is_recorded_while_the_job_runs(stub):
    actors = declare(stub)
    msg = actors["steps"].send(4)
    run_all(stub)
    row = stub.ledger.rows[msg.message_id]
    assert row.resolution == "COMPLETED"
    progress = [e.progress for e in stub.ledger.events if getattr(e, "message_id", None) == msg.message_id]
    assert [p["fraction"] for p in progress] == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("value", ["nul\x00", "\udc80", float("nan")])
def test_send_refuses_what_the_ledger_cannot_store_and_records_nothing(stub, value):
    actors = declare(stub)
    with pytest.raises(InvalidArguments, match="argument 'a' of ADD"):
        actors["add"].send(value, 1)
    assert stub.ledger.rows == {} and stub.queues["default"].qsize() == 0


def test_unknown_actor_messages_are_rejected_and_their_run_closed(stub):
    from dramatiq import Message

    declare(stub)
    ghost = Message(queue_name="default", actor_name="GHOST", args=(), kwargs={}, options={})
    stub.ledger.apply_raw(stub.ledger.pending_event(None, ghost))
    stub.queues["default"].put(ghost.encode())
    run_all(stub)
    row = stub.ledger.rows[ghost.message_id]
    assert (row.status, row.resolution) == ("FINISHED", "ERROR")
    assert [r.reason for r in stub.ledger.rejected] == ["no actor named 'GHOST' on this worker"]
