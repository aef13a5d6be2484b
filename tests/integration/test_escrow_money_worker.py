"""Money actors in a real ``dramatiq actors`` worker (issue 14, item 4): a batch that waited
in the queue past the default age limit still runs; a batch held by another run is retried
later, visibly; a revoke stops a running batch between items, and the operator command
re-sends the rest under the same keys."""

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
from tests.support.ledger import error_rows, run_row, wait_status

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 11, 23)


def _batch(tenant, n: int):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        batch, items = add_batch(s, seeded.cases["a"], [f"{100 + i}.00" for i in range(n)])
    return batch.id, [i.id for i in items]


def _env(bank, **extra: str) -> dict[str, str]:
    return {"BANK_GATEWAY_URL": bank.url, "BANK_TIMEOUT": "5", **extra}


def _statuses(tenant, batch_id):
    return [r[0] for r in tenant.rows("SELECT status FROM huntington_batch_items WHERE batch_id = :b ORDER BY id",
                                      b=batch_id)]


def test_a_batch_that_waited_past_the_queue_age_limit_still_runs(escrow_tenant, tenant, bank, broker, start_worker):
    """A worker outage of two hours: the batch message is older than MAX_AGE_MS (1 h) when
    a worker takes it. It must run (before: EXPIRED, the payments silently not made)."""
    from actors.escrow.jobs import process_huntington_batch
    from jobcore.context import JobContext

    batch_id, ids = _batch(tenant, 2)
    message = process_huntington_batch.message_with_options(
        args=(batch_id,), job_context=JobContext(tenant_id=escrow_tenant.id).to_dict())
    message = message.copy(message_timestamp=int(time.time() * 1000) - 2 * 3600 * 1000)
    broker.enqueue(message)
    start_worker(env=_env(bank))
    row = wait_status(message.message_id, "FINISHED", timeout=60)
    assert row["resolution"] == "COMPLETED", (row, error_rows(message.message_id))
    assert _statuses(tenant, batch_id) == ["COMPLETED", "COMPLETED"]


def test_a_batch_held_by_another_run_is_retried_later_and_then_sent(escrow_tenant, tenant, bank, start_worker):
    from actors.escrow.huntington import batch_lock
    from actors.escrow.jobs import process_huntington_batch

    batch_id, ids = _batch(tenant, 3)
    start_worker(env=_env(bank, HUNTINGTON_LOCK_WAIT_S="0.3", HUNTINGTON_BUSY_RETRY_MS="300"))
    with tenant.session() as holder, batch_lock(holder, batch_id) as held:
        assert held is not None  # another live run holds the batch
        msg = send_for_tenant(process_huntington_batch, escrow_tenant.id, batch_id)
        busy = wait_for(lambda: [e for e in error_rows(msg.message_id) if e["will_retry"]], 30,
                        what="a BUSY attempt recorded as will_retry")
        assert "BatchBusy" in busy[0]["exception_type"] and "held by another live run" in busy[0]["message"]
        assert "held by another live run" in tenant.scalar("SELECT last_error FROM huntington_batches")
        assert run_row(msg.message_id)["status"] != "FINISHED"  # not COMPLETED while nothing was sent
        assert bank.stats()["transfers"] == {}
    row = wait_status(msg.message_id, "FINISHED", timeout=60)
    assert row["resolution"] == "COMPLETED" and row["attempts"] >= 2
    assert _statuses(tenant, batch_id) == ["COMPLETED"] * 3
    assert set(bank.stats()["submits"].values()) == {1}
    assert tenant.scalar("SELECT last_error FROM huntington_batches") is None


def test_revoke_stops_a_running_batch_between_items_and_the_operator_resends_the_rest(
        escrow_tenant, tenant, bank, start_worker):
    from actors.escrow.jobs import process_huntington_batch
    from actors.escrow.operator import huntington_unsent, resend_huntington_batch
    from tests.support.ledger import revoke

    batch_id, ids = _batch(tenant, 8)
    bank.faults(*["delay=0.6"] * 8)
    start_worker(env=_env(bank))
    msg = send_for_tenant(process_huntington_batch, escrow_tenant.id, batch_id)
    wait_for(lambda: len(bank.stats()["submits"]) >= 2, 30, what="two submits at the bank")
    # Revoked while a bank call is in flight: the call finishes and is recorded; the run
    # stops at the next checkpoint, between items.
    assert revoke(msg.message_id).outcome == "revoking"
    row = wait_status(msg.message_id, "FINISHED", timeout=30)
    assert row["resolution"] == "REVOKED"
    statuses = _statuses(tenant, batch_id)
    sent = statuses.count("COMPLETED")
    assert 2 <= sent < 8 and statuses == ["COMPLETED"] * sent + ["PENDING"] * (8 - sent), statuses
    stats = bank.stats()
    assert sorted(stats["transfers"]) == sorted(f"hb{batch_id}-{i}" for i in ids[:sent])
    assert set(stats["submits"].values()) == {1}
    batch = tenant.rows("SELECT status, last_error FROM huntington_batches WHERE id = :b", b=batch_id)[0]
    assert batch[0] == "PENDING" and "revoked by an operator" in batch[1]

    [listed] = huntington_unsent(escrow_tenant.id)["batches"]
    assert (listed["batch_id"], listed["pending"], listed["failed_not_sent"]) == (batch_id, 8 - sent, 0)
    preview = resend_huntington_batch(escrow_tenant.id, batch_id, operator="ops-bob", dry_run=True)
    assert [i["id"] for i in preview["items"]] == ids[sent:] and preview["message_id"] is None
    out = resend_huntington_batch(escrow_tenant.id, batch_id, operator="ops-bob", reason="resume after revoke")
    row = wait_status(out["message_id"], "FINISHED", timeout=60)
    assert row["resolution"] == "COMPLETED", error_rows(out["message_id"])
    assert row["actor_name"] == "resend_huntington_batch" and row["result"]["completed"] == ids[sent:]
    assert _statuses(tenant, batch_id) == ["COMPLETED"] * 8
    stats = bank.stats()
    assert sorted(stats["transfers"]) == sorted(f"hb{batch_id}-{i}" for i in ids)  # one per item, same keys
    assert set(stats["submits"].values()) == {1}  # no item sent twice, not even de-duplicated
    (audit,) = tenant.rows("SELECT operator, reason, item_ids, job_message_id FROM huntington_operator_actions")
    assert tuple(audit) == ("ops-bob", "resume after revoke", ids[sent:], out["message_id"])
    assert resend_huntington_batch(escrow_tenant.id, batch_id, operator="ops-bob")["message_id"] is None  # nothing left
