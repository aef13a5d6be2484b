"""Payloads no platform producer writes, read back by the worker, the operator commands and
reconciliation (the fuzz test, tests/acceptance/test_fuzz_payloads.py, found these)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.support.ledger import count, run_row, settle

pytestmark = pytest.mark.integration


def _message(actor: str = "EXAMPLE", **fields: Any) -> tuple[str, str, dict[str, Any]]:
    rid, mid = str(uuid.uuid4()), str(uuid.uuid4())
    payload = {"queue_name": "default", "actor_name": actor, "args": ["x"], "kwargs": {},
               "options": {"redis_message_id": rid}, "message_id": mid, "message_timestamp": int(time.time() * 1000)}
    options = fields.pop("options", {})
    payload.update(fields)
    payload["options"].update(options)
    return rid, mid, payload


def test_dead_letters_and_reconciliation_read_any_payload(broker):
    """A dead letter that is JSON but not an object made ``jobctl dead-letters`` fail
    (AttributeError); one nested deeper than the recursion limit made both the listing and
    every reconciliation pass fail (RecursionError), for as long as it stayed (7 days)."""
    from ledger.operations import dead_letters
    from ledger.reconcile import present_message_ids

    client, keys = broker.client, broker.keys
    rid, mid, payload = _message()
    dead = {rid: json.dumps(payload), "array": "[1, 2]", "deep": "[" * 100_000 + "]" * 100_000,
            "deep-args": json.dumps(_message()[2]).replace('["x"]', "[" * 600 + "]" * 600)}
    for i, (dead_id, data) in enumerate(dead.items()):
        client.zadd(keys.dead("default"), {dead_id: i})
        client.hset(keys.dead_messages("default"), dead_id, data)

    rows = {r["redis_id"]: r for r in dead_letters(broker, "default")}
    assert set(rows) == set(dead)
    assert rows[rid]["message_id"] == mid and not rows[rid]["undecodable"]
    assert rows["array"]["undecodable"] and rows["deep"]["undecodable"]
    assert mid in present_message_ids(client, keys)


def test_copies_and_overlong_ids_are_dead_lettered_with_a_reason(broker, start_worker):
    """A payload copied under a second Redis id names its original's id: it was never acked
    and, requeued by the stuck-fetch check, came back forever; a broken one copied the same
    way was "dead-lettered" by its original's id, so the copy stayed. A 100-character
    message id made the record of its rejection unwritable (parked in ledger_dead_events)."""
    worker = start_worker(env={"STUCK_FETCH_GRACE_MS": "1000"})
    ok_rid, ok_mid, ok = _message()
    bad_rid, _, bad = _message(options={"retries": "x"})
    long_rid, _, long_id = _message(message_id="m" * 100)
    copies = {"ok-copy": json.dumps(ok).encode(), "bad-copy": json.dumps(bad).encode()}
    for rid, data in [(ok_rid, copies["ok-copy"]), (bad_rid, copies["bad-copy"]),
                      (long_rid, json.dumps(long_id).encode()), *copies.items()]:
        broker.do_enqueue("default", rid, data)

    client, keys = broker.client, broker.keys
    expected_dead = {"ok-copy", bad_rid, "bad-copy", long_rid}

    def settled() -> bool:
        acks = sum(client.scard(keys.acks(w.decode(), "default")) for w in client.zrange(keys.workers, 0, -1))
        return not acks and {d.decode() for d in client.zrange(keys.dead("default"), 0, -1)} == expected_dead

    wait_for(settled, 30, what="the copies and the broken messages dead-lettered, nothing held")
    assert client.hlen(keys.messages("default")) == 0 and client.llen(keys.queue("default")) == 0
    settle()
    assert run_row(ok_mid)["resolution"] == "COMPLETED"
    reasons = dict(_rows("SELECT redis_message_id, reason FROM rejected_messages"))
    assert set(reasons) == expected_dead
    assert "names another Redis id" in reasons["ok-copy"]
    assert "options.retries is str" in reasons["bad-copy"] and "options.retries is str" in reasons[bad_rid]
    assert "message_id has 100 characters" in reasons[long_rid]
    assert count("SELECT count(*) FROM ledger_dead_events") == 0
    assert worker.alive()


def test_a_message_from_a_foreign_producer_is_retried_like_any_other(broker, start_worker):
    """Its retry was taken for a new run of a known message id and not enqueued: the run
    stayed STARTED until reconciliation re-sent it, without its arguments."""
    from tests.support.ledger import error_rows, wait_status

    start_worker(env={"MIN_BACKOFF_MS": "50", "MAX_BACKOFF_MS": "100", "RECONCILE_INTERVAL_MS": "3600000"})
    rid, mid, payload = _message("EXAMPLE_ERROR", args=["boom"])
    broker.do_enqueue("default", rid, json.dumps(payload).encode())
    row = wait_status(mid, "FINISHED", timeout=20)
    assert (row["resolution"], row["attempts"]) == ("ERROR", 3)
    assert [(e["attempt"], e["will_retry"], e["message"]) for e in error_rows(mid)] == [
        (1, True, "boom"), (2, True, "boom"), (3, False, "boom")]


def _rows(sql: str) -> list[Any]:
    from sqlalchemy import text

    from jobcore.db import control_engine

    with control_engine().connect() as conn:
        return list(conn.execute(text(sql)).all())
