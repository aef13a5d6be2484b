"""Money tests: PROCESS_HUNTINGTON_BATCH and auto-heal in a real ``dramatiq actors`` worker
with the platform's ledger middleware, against the bank simulator process."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.conftest import wait_for
from tests.support.escrow_seed import add_batch, seed_people_and_cases
from tests.support.escrow_services import bank, escrow_tenant_db, tenant  # noqa: F401 - fixtures
from tests.support.escrow_worker import control_db, escrow_tenant, send_for_tenant  # noqa: F401 - fixtures
from tests.support.http_recorder import recording_server
from tests.support.ledger import error_rows, run_row, wait_status

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 11, 23)


def _batch(tenant, n: int):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        batch, items = add_batch(s, seeded.cases["a"], [f"{100 + i}.00" for i in range(n)])
    return batch.id, [i.id for i in items]


def _worker_env(bank, **extra: str) -> dict[str, str]:
    return {"BANK_GATEWAY_URL": bank.url, "BANK_TIMEOUT": "3", **extra}


def _item_statuses(tenant, batch_id):
    return [r[0] for r in tenant.rows("SELECT status FROM huntington_batch_items WHERE batch_id = :b ORDER BY id",
                                      b=batch_id)]


def _assert_one_transfer_per_item(bank, batch_id, ids):
    stats = bank.stats()
    refs = sorted(t["reference"] for t in stats["transfers"].values())
    assert refs == sorted(f"batch {batch_id} item {i}" for i in ids)  # one transfer per item, no extra key
    return stats


def test_kill_9_mid_batch_then_redelivery_completes_with_one_transfer_per_item(escrow_tenant, tenant, bank,
                                                                               start_worker):
    from actors.escrow.jobs import process_huntington_batch

    batch_id, ids = _batch(tenant, 8)
    bank.faults(*["delay=0.4"] * 8)
    first = start_worker(env=_worker_env(bank))
    msg = send_for_tenant(process_huntington_batch, escrow_tenant.id, batch_id)
    wait_for(lambda: len(bank.stats()["transfers"]) >= 3, 30, what="3 transfers at the bank")
    first.kill()  # SIGKILL mid-batch: no ack, no clean-up, an item in flight
    sent_before_kill = len(bank.stats()["transfers"])
    assert 3 <= sent_before_kill < 8
    assert "SUBMITTING" in _item_statuses(tenant, batch_id) or "PENDING" in _item_statuses(tenant, batch_id)
    start_worker(env=_worker_env(bank))
    row = wait_status(msg.message_id, "FINISHED", timeout=60)
    assert row["resolution"] == "COMPLETED"
    assert _item_statuses(tenant, batch_id) == ["COMPLETED"] * 8
    stats = _assert_one_transfer_per_item(bank, batch_id, ids)
    assert set(stats["submits"].values()) == {1}  # not even a de-duplicated re-send
    assert tenant.scalar("SELECT status FROM huntington_batches WHERE id = :b", b=batch_id) == "COMPLETED"


def test_duplicate_batch_messages_send_no_second_transfer(escrow_tenant, tenant, bank, start_worker):
    from actors.escrow.jobs import process_huntington_batch

    batch_id, ids = _batch(tenant, 5)
    bank.faults(*["delay=0.2"] * 5)
    start_worker(env=_worker_env(bank), threads=4)
    msgs = [send_for_tenant(process_huntington_batch, escrow_tenant.id, batch_id) for _ in range(2)]
    rows = [wait_status(m.message_id, "FINISHED", timeout=60) for m in msgs]
    assert [r["resolution"] for r in rows] == ["COMPLETED", "COMPLETED"]
    again = send_for_tenant(process_huntington_batch, escrow_tenant.id, batch_id)  # a late duplicate
    assert wait_status(again.message_id, "FINISHED", timeout=30)["resolution"] == "COMPLETED"
    stats = _assert_one_transfer_per_item(bank, batch_id, ids)
    assert set(stats["submits"].values()) == {1}


def test_bank_commits_and_drops_response_then_auto_heal_completes_without_second_transfer(
        escrow_tenant, tenant, bank, start_worker):
    from actors.escrow.jobs import auto_heal_huntington_batches, process_huntington_batch

    batch_id, ids = _batch(tenant, 3)
    bank.faults("none", "drop")
    start_worker(env=_worker_env(bank))
    msg = send_for_tenant(process_huntington_batch, escrow_tenant.id, batch_id)
    row = wait_status(msg.message_id, "FINISHED", timeout=30)
    assert row["resolution"] == "ERROR" and row["attempts"] == 1  # money: never retried by the broker
    assert _item_statuses(tenant, batch_id) == ["COMPLETED", "UNKNOWN", "COMPLETED"]
    heal = send_for_tenant(auto_heal_huntington_batches, escrow_tenant.id, 0)
    assert wait_status(heal.message_id, "FINISHED", timeout=30)["resolution"] == "COMPLETED"
    assert _item_statuses(tenant, batch_id) == ["COMPLETED"] * 3
    stats = _assert_one_transfer_per_item(bank, batch_id, ids)
    assert stats["submits"][f"hb{batch_id}-{ids[1]}"] == 1
    assert tenant.scalar("SELECT status FROM huntington_batches WHERE id = :b", b=batch_id) == "COMPLETED"
    assert run_row(heal.message_id)["result"]["completed"] == [ids[1]]


def test_bank_5xx_marks_item_failed_with_an_error_run_and_an_error_event(escrow_tenant, tenant, bank, start_worker):
    from actors.escrow.jobs import process_huntington_batch

    batch_id, ids = _batch(tenant, 2)
    bank.faults("error=503")
    with recording_server() as (posthog_url, recorder):
        start_worker(env=_worker_env(bank, POSTHOG_API_KEY="phc_test", POSTHOG_HOST=posthog_url))
        msg = send_for_tenant(process_huntington_batch, escrow_tenant.id, batch_id)
        row = wait_status(msg.message_id, "FINISHED", timeout=30)
        events = wait_for(lambda: [e for e in recorder.events() if e.get("event") == "$exception"], 20,
                          what="an $exception event")
    assert row["resolution"] == "ERROR" and row["attempts"] == 1
    (err,) = error_rows(msg.message_id)
    assert "BatchIncomplete" in str(err) and "FAILED" in str(err)
    props = events[0]["properties"]
    assert props["actor"] == "PROCESS_HUNTINGTON_BATCH" and props["tenant_id"] == escrow_tenant.id
    item = tenant.rows("SELECT status, retryable, last_error FROM huntington_batch_items WHERE id = :i",
                       i=ids[0])[0]
    assert item[0] == "FAILED" and item[1] is True and "503" in item[2]
    assert _item_statuses(tenant, batch_id)[1] == "COMPLETED"
    assert list(bank.stats()["transfers"]) == [f"hb{batch_id}-{ids[1]}"]


def test_time_limit_during_bank_call_is_not_blindly_resent(escrow_tenant, tenant, bank, start_worker):
    from actors.escrow.jobs import auto_heal_huntington_batches, process_huntington_batch

    batch_id, ids = _batch(tenant, 2)
    bank.faults("delay=4")  # the bank answers (and commits) after the time limit has passed
    start_worker(env=_worker_env(bank, BANK_TIMEOUT="10"))
    msg = send_for_tenant(process_huntington_batch, escrow_tenant.id, batch_id, time_limit=1500)
    row = wait_status(msg.message_id, "FINISHED", timeout=30)
    assert row["resolution"] == "ERROR" and row["attempts"] == 1
    assert "TimeLimitExceeded" in str(error_rows(msg.message_id))
    assert _item_statuses(tenant, batch_id) == ["UNKNOWN", "PENDING"]
    time.sleep(2.5)  # longer than the retry back-off: nothing re-sends it
    key = f"hb{batch_id}-{ids[0]}"
    assert bank.stats()["submits"] == {key: 1}
    assert run_row(msg.message_id)["attempts"] == 1
    heal = send_for_tenant(auto_heal_huntington_batches, escrow_tenant.id, 0)
    wait_status(heal.message_id, "FINISHED", timeout=30)
    assert _item_statuses(tenant, batch_id) == ["COMPLETED", "PENDING"]  # healed from the bank's answer
    assert bank.stats()["submits"] == {key: 1}
