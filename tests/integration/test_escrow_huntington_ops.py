"""Huntington operator re-send and auto-heal locking against the bank simulator process over
real HTTP, on a migrated tenant database (issue 14, items 1 and 4)."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import threading

import pytest

from actors.escrow.bank_gateway import BankGatewayClient
from actors.escrow.huntington import BatchIncomplete, idempotency_key, process_batch
from tests.conftest import wait_for
from tests.support.escrow_seed import add_batch, seed_people_and_cases
from tests.support.escrow_services import bank, escrow_tenant_db, tenant  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 11, 23)


def _batches(tenant, *sizes: int):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        made = [add_batch(s, seeded.cases["a"], [f"{10 * (n + 1)}.00" for n in range(size)]) for size in sizes]
    return [(b.id, [i.id for i in items]) for b, items in made]


def _statuses(tenant, batch_id):
    return [r[0] for r in tenant.rows("SELECT status FROM huntington_batch_items WHERE batch_id = :b ORDER BY id",
                                      b=batch_id)]


def test_resend_asks_the_bank_first_and_never_makes_a_second_transfer(tenant, bank):
    """Item 0's transfer is committed by the bank after the client gave up and after auto-heal
    looked (a real race): the item is FAILED "not sent" although the bank has it. Item 1 got
    a 503. The operator re-send completes item 0 from the bank's answer without submitting it
    again, re-sends item 1 under its existing key, and records who did it."""
    from actors.escrow.huntington_heal import heal_batches
    from actors.escrow.huntington_ops import resend_unsent_items, unsent_items

    [(batch_id, ids)] = _batches(tenant, 3)
    keys = [idempotency_key(batch_id, i) for i in ids]
    bank.faults("delay=3", "error=503", "none")
    with tenant.session() as s, pytest.raises(BatchIncomplete):
        process_batch(s, batch_id, BankGatewayClient(bank.url, timeout=1))
    assert _statuses(tenant, batch_id) == ["UNKNOWN", "FAILED", "COMPLETED"]
    with tenant.session() as s:  # the bank is still holding item 0: heal finds nothing under its key
        assert heal_batches(s, BankGatewayClient(bank.url, timeout=5), grace_seconds=0).not_sent == [ids[0]]
    wait_for(lambda: keys[0] in bank.stats()["transfers"], 10, what="the bank's late commit of item 0")
    assert _statuses(tenant, batch_id) == ["FAILED", "FAILED", "COMPLETED"]
    with tenant.session() as s:
        assert [i["id"] for i in unsent_items(s, batch_id)] == ids[:2]
        result = resend_unsent_items(s, batch_id, BankGatewayClient(bank.url, timeout=5), operator="ops-alice",
                                     reason="bank 503 on 2026-11-23")
    assert result.found_at_bank == [ids[0]] and result.requeued == [ids[1]]
    assert result.outcome is not None and result.outcome.status == "COMPLETED"
    assert _statuses(tenant, batch_id) == ["COMPLETED"] * 3
    stats = bank.stats()
    assert sorted(stats["transfers"]) == sorted(keys)  # one transfer per item, under the items' keys
    assert stats["submits"] == {keys[0]: 1, keys[1]: 2, keys[2]: 1}  # item 0 not submitted again
    rows = tenant.rows("SELECT bank_transfer_id FROM huntington_batch_items WHERE id = :i", i=ids[0])
    assert rows[0][0] == stats["transfers"][keys[0]]["transfer_id"]
    (audit,) = tenant.rows("SELECT batch_id, action, operator, reason, item_ids, at IS NOT NULL, detail "
                           "FROM huntington_operator_actions")
    assert audit[:6] == (batch_id, "resend", "ops-alice", "bank 503 on 2026-11-23", ids[:2], True)
    assert "outcome COMPLETED" in audit[6]
    events = tenant.rows("SELECT item_id, from_status, to_status FROM huntington_item_events "
                         "WHERE actor = 'operator:ops-alice' ORDER BY id")
    assert [tuple(e) for e in events] == [(ids[0], "FAILED", "COMPLETED"), (ids[1], "FAILED", "PENDING"),
                                          (ids[1], "PENDING", "SUBMITTING"), (ids[1], "SUBMITTING", "COMPLETED")]


def test_rejected_items_are_only_resent_when_asked_after_their_data_was_fixed(tenant, bank):
    from actors.escrow.huntington_ops import resend_unsent_items

    [(batch_id, ids)] = _batches(tenant, 2)
    bank.faults("error=422")
    with tenant.session() as s, pytest.raises(BatchIncomplete):
        process_batch(s, batch_id, BankGatewayClient(bank.url, timeout=5))
    client = BankGatewayClient(bank.url, timeout=5)
    with tenant.session() as s, pytest.raises(BatchIncomplete, match="FAILED"):
        resend_unsent_items(s, batch_id, client, operator="ops-alice")  # rejected: left alone
    assert _statuses(tenant, batch_id) == ["FAILED", "COMPLETED"]
    with tenant.session() as s:
        result = resend_unsent_items(s, batch_id, client, operator="ops-alice", include_rejected=True,
                                     reason="beneficiary corrected")
    assert result.requeued == [ids[0]] and _statuses(tenant, batch_id) == ["COMPLETED"] * 2
    assert tenant.scalar("SELECT count(*) FROM huntington_operator_actions") == 2


def test_auto_heal_holds_no_transaction_and_no_lock_while_it_asks_the_bank(tenant, bank):
    """Two batches with an item of unknown outcome. While heal waits for the bank's answer
    about the first, no transaction of this database is open and no advisory lock is held
    (before: the lock function in the WHERE clause locked every candidate batch, and the
    transaction stayed open across the HTTP call)."""
    from actors.escrow.huntington_heal import heal_batches

    (a, a_ids), (b, b_ids) = _batches(tenant, 1, 1)
    for batch_id, item_id in ((a, a_ids[0]), (b, b_ids[0])):
        tenant.execute("UPDATE huntington_batch_items SET status = 'UNKNOWN', idempotency_key = :k, "
                       "updated_at = now() - interval '5 minutes' WHERE id = :i",
                       k=idempotency_key(batch_id, item_id), i=item_id)
    bank.get_faults("delay=3")
    done: dict[str, object] = {}

    def heal() -> None:
        with tenant.session() as s:
            done["result"] = heal_batches(s, BankGatewayClient(bank.url, timeout=10), grace_seconds=60)

    thread = threading.Thread(target=heal)
    thread.start()
    try:
        wait_for(lambda: bank.stats()["gets"], 10, what="heal's first lookup at the bank")
        open_tx = tenant.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND state LIKE 'idle in transaction%'")
        locks = tenant.scalar("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                              "WHERE l.locktype = 'advisory' AND d.datname = current_database()")
        assert (open_tx, locks) == (0, 0)
    finally:
        thread.join(30)
    result = done["result"]
    assert result.not_sent == [a_ids[0], b_ids[0]]  # type: ignore[attr-defined]
    assert _statuses(tenant, a) == _statuses(tenant, b) == ["FAILED"]


def test_auto_heal_decides_nothing_for_an_item_that_changed_during_the_bank_call(tenant, bank):
    """A run resumed the item (re-sent it under its key) while heal was asking the bank:
    heal's answer is stale and it records nothing."""
    from actors.escrow.huntington_heal import heal_batches

    [(batch_id, ids)] = _batches(tenant, 1)
    tenant.execute("UPDATE huntington_batch_items SET status = 'SUBMITTING', idempotency_key = :k, attempt = 1, "
                   "updated_at = now() - interval '5 minutes'", k=idempotency_key(batch_id, ids[0]))
    bank.get_faults("delay=2")
    done: dict[str, object] = {}

    def heal() -> None:
        with tenant.session() as s:
            done["result"] = heal_batches(s, BankGatewayClient(bank.url, timeout=10), grace_seconds=60)

    thread = threading.Thread(target=heal)
    thread.start()
    wait_for(lambda: bank.stats()["gets"], 10, what="heal's lookup at the bank")
    with tenant.session() as s:  # the resumed run: asks the bank (no fault queued now), re-sends, completes
        assert process_batch(s, batch_id, BankGatewayClient(bank.url, timeout=5)).completed == ids
    thread.join(30)
    result = done["result"]
    assert result.skipped == ids and result.not_sent == result.completed == []  # type: ignore[attr-defined]
    assert _statuses(tenant, batch_id) == ["COMPLETED"]
    assert len(bank.stats()["transfers"]) == 1
