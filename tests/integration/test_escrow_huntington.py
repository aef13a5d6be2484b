"""Huntington batches and auto-heal against the bank simulator process, on a migrated
tenant database (domain level; the worker-level money tests are in test_escrow_money.py)."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from actors.escrow.bank_gateway import BankGatewayClient, TransferRequest
from actors.escrow.huntington import BatchIncomplete, batch_lock, idempotency_key, process_batch
from actors.escrow.huntington_heal import heal_batches
from actors.escrow.huntington_ops import resend_unsent_items
from tests.support.escrow_seed import add_batch, seed_people_and_cases
from tests.support.escrow_services import (  # noqa: F401 - fixtures
    bank,
    escrow_tenant_db,
    run_concurrently,
    tenant,
)

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 11, 23)


def _batch(tenant, amounts):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        batch, items = add_batch(s, seeded.cases["a"], amounts)
    return batch.id, [i.id for i in items]


def _client(bank, timeout: float = 3.0) -> BankGatewayClient:
    return BankGatewayClient(bank.url, timeout=timeout)


def _items(tenant, batch_id):
    return {r.id: r for r in tenant.rows("SELECT * FROM huntington_batch_items WHERE batch_id = :b ORDER BY id",
                                         b=batch_id)}


def test_batch_sends_each_item_once_with_its_stored_key_and_records_transitions(tenant, bank):
    batch_id, ids = _batch(tenant, ["100.00", "250.25", "75.10", "5000.00"])
    with tenant.session() as s:
        outcome = process_batch(s, batch_id, _client(bank))
    assert outcome.status == "COMPLETED" and outcome.completed == ids
    stats = bank.stats()
    keys = [idempotency_key(batch_id, i) for i in ids]
    assert stats["submits"] == {k: 1 for k in keys}
    items = _items(tenant, batch_id)
    for i in ids:
        assert items[i].status == "COMPLETED" and items[i].idempotency_key == idempotency_key(batch_id, i)
        assert items[i].bank_transfer_id == stats["transfers"][items[i].idempotency_key]["transfer_id"]
    assert stats["transfers"][keys[1]]["amount"] == "250.25" and stats["transfers"][keys[1]]["kind"] == "WIRE"
    events = tenant.rows("SELECT from_status, to_status FROM huntington_item_events WHERE item_id = :i ORDER BY id",
                         i=ids[0])
    assert [tuple(e) for e in events] == [("PENDING", "SUBMITTING"), ("SUBMITTING", "COMPLETED")]
    assert tenant.scalar("SELECT status FROM huntington_batches WHERE id = :b", b=batch_id) == "COMPLETED"


def test_batch_processed_twice_and_concurrently_sends_no_second_transfer(tenant, bank):
    batch_id, ids = _batch(tenant, ["10.00"] * 6)
    bank.faults(*["delay=0.2"] * 6)  # slow bank: the two runs really overlap

    def run(_: int):
        with tenant.session() as s:
            return process_batch(s, batch_id, _client(bank))

    results = run_concurrently(2, run) + [run(0)]
    assert all(r.status == "COMPLETED" for r in results)
    assert sorted(i for r in results for i in r.completed) == ids  # every item completed by exactly one run
    stats = bank.stats()
    assert len(stats["transfers"]) == 6 and set(stats["submits"].values()) == {1}


def test_resumed_batch_asks_the_bank_before_resending_an_item_caught_mid_call(tenant, bank):
    batch_id, ids = _batch(tenant, ["10.00", "20.00"])
    key = idempotency_key(batch_id, ids[0])
    # A previous run stored the key, the bank committed, and the worker died before recording it.
    tenant.execute("UPDATE huntington_batch_items SET status = 'SUBMITTING', idempotency_key = :k, attempt = 1 "
                   "WHERE id = :i", k=key, i=ids[0])
    _client(bank).submit(TransferRequest(key, "ACH", __import__("decimal").Decimal("10.00"), "Beneficiary 0",
                                         "tok_0000", f"batch {batch_id} item {ids[0]}"))
    # Item 2: the worker died before its request left; the bank has nothing under the key.
    key2 = idempotency_key(batch_id, ids[1])
    tenant.execute("UPDATE huntington_batch_items SET status = 'SUBMITTING', idempotency_key = :k, attempt = 1 "
                   "WHERE id = :i", k=key2, i=ids[1])
    with tenant.session() as s:
        outcome = process_batch(s, batch_id, _client(bank))
    assert outcome.status == "COMPLETED"
    stats = bank.stats()
    assert stats["submits"][key] == 1  # found by key, not re-sent
    assert stats["submits"][key2] == 1 and len(stats["transfers"]) == 2  # not found: sent once, same key
    items = _items(tenant, batch_id)
    assert items[ids[0]].status == items[ids[1]].status == "COMPLETED" and items[ids[1]].attempt == 2


def test_lost_response_leaves_the_item_unknown_and_auto_heal_completes_it(tenant, bank):
    batch_id, ids = _batch(tenant, ["10.00", "20.00", "30.00"])
    bank.faults("none", "drop")  # item 2: committed at the bank, response dropped
    with tenant.session() as s, pytest.raises(BatchIncomplete, match="NEEDS_RECONCILIATION"):
        process_batch(s, batch_id, _client(bank))
    items = _items(tenant, batch_id)
    assert [items[i].status for i in ids] == ["COMPLETED", "UNKNOWN", "COMPLETED"]
    assert "connection lost" in items[ids[1]].last_error
    with tenant.session() as s:
        healed = heal_batches(s, _client(bank), grace_seconds=0)
    assert healed.completed == [ids[1]] and healed.not_sent == []
    with tenant.session() as s:  # a second heal (duplicate message) finds nothing to do
        again = heal_batches(s, _client(bank), grace_seconds=0)
    assert again.completed == again.not_sent == again.undecided == []
    stats = bank.stats()
    key = idempotency_key(batch_id, ids[1])
    assert stats["submits"][key] == 1 and len(stats["transfers"]) == 3
    item = _items(tenant, batch_id)[ids[1]]
    assert item.status == "COMPLETED" and item.bank_transfer_id == stats["transfers"][key]["transfer_id"]
    assert tenant.scalar("SELECT status FROM huntington_batches WHERE id = :b", b=batch_id) == "COMPLETED"


def test_bank_5xx_marks_the_item_failed_retryable_and_a_resend_sends_it_once(tenant, bank):
    batch_id, ids = _batch(tenant, ["10.00", "20.00"])
    bank.faults("error=503")
    with tenant.session() as s, pytest.raises(BatchIncomplete, match="FAILED"):
        process_batch(s, batch_id, _client(bank))
    item = _items(tenant, batch_id)[ids[0]]
    assert (item.status, item.retryable) == ("FAILED", True) and "503" in item.last_error
    with tenant.session() as s:
        assert heal_batches(s, _client(bank), grace_seconds=0).completed == []  # a definite failure: not healed
        resent = resend_unsent_items(s, batch_id, _client(bank), operator="ops-alice")
        assert resent.requeued == [ids[0]] and resent.outcome is not None
        assert resent.outcome.status == "COMPLETED"
    assert bank.stats()["submits"][idempotency_key(batch_id, ids[0])] == 2  # one 503 + one committed
    assert len(bank.stats()["transfers"]) == 2


def test_rejected_transfer_is_a_final_failure(tenant, bank):
    batch_id, ids = _batch(tenant, ["10.00"])
    tenant.execute("UPDATE huntington_batch_items SET kind = 'WIRE', beneficiary = ''")  # still valid
    bank.faults("error=422")  # 4xx from the gateway: rejected, retrying will not help
    with tenant.session() as s, pytest.raises(BatchIncomplete):
        process_batch(s, batch_id, _client(bank))
    item = _items(tenant, batch_id)[ids[0]]
    assert (item.status, item.retryable) == ("FAILED", False)


def test_bank_timeout_without_commit_is_healed_as_not_sent(tenant, bank):
    batch_id, ids = _batch(tenant, ["10.00"])
    bank.faults("timeout=3")  # the bank holds the request and never commits it
    with tenant.session() as s, pytest.raises(BatchIncomplete):
        process_batch(s, batch_id, _client(bank, timeout=1))
    assert _items(tenant, batch_id)[ids[0]].status == "UNKNOWN"
    with tenant.session() as s:
        healed = heal_batches(s, _client(bank), grace_seconds=0)
    assert healed.not_sent == [ids[0]]
    item = _items(tenant, batch_id)[ids[0]]
    assert (item.status, item.retryable) == ("FAILED", True) and "not sent" in item.last_error
    assert bank.stats()["transfers"] == {}


def test_heal_respects_the_grace_period(tenant, bank):
    batch_id, ids = _batch(tenant, ["10.00"])
    tenant.execute("UPDATE huntington_batch_items SET status = 'UNKNOWN', idempotency_key = 'k1', "
                   "updated_at = now()")
    with tenant.session() as s:
        assert heal_batches(s, _client(bank), grace_seconds=60).not_sent == []
    assert _items(tenant, batch_id)[ids[0]].status == "UNKNOWN"


def test_two_concurrent_heals_never_heal_the_same_item(tenant, bank):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        batches = [add_batch(s, seeded.cases["a"], ["10.00"] * 5) for _ in range(6)]
    client = _client(bank)
    all_items = [(b.id, i) for b, items in batches for i in items]
    for n, (batch_id, item) in enumerate(all_items):
        key = idempotency_key(batch_id, item.id)
        if n % 2 == 0:  # half went through at the bank before their responses were lost
            client.submit(TransferRequest(key, item.kind, item.amount, item.beneficiary, item.account_token, "x"))
        tenant.execute("UPDATE huntington_batch_items SET status = 'UNKNOWN', idempotency_key = :k, "
                       "updated_at = now() - interval '5 minutes' WHERE id = :i", k=key, i=item.id)

    def heal(_: int):
        with Session(tenant.engine) as s:
            return heal_batches(s, _client(bank), grace_seconds=60)

    results = run_concurrently(2, heal)
    handled = [i for r in results for i in r.completed + r.not_sent]
    assert sorted(handled) == sorted(item.id for _, item in all_items)  # each item healed by exactly one run
    assert len(results[0].completed) + len(results[1].completed) == 15
    assert tenant.scalar("SELECT count(*) FROM huntington_item_events WHERE actor = 'auto_heal_huntington_batches'"
                         ) == 30
    assert tenant.scalar("SELECT count(*) FROM huntington_batch_items WHERE status = 'UNKNOWN'") == 0


def test_heal_leaves_alone_a_batch_that_a_live_run_is_processing(tenant, bank):
    batch_id, ids = _batch(tenant, ["10.00"])
    tenant.execute("UPDATE huntington_batch_items SET status = 'SUBMITTING', idempotency_key = 'kx', "
                   "updated_at = now() - interval '5 minutes'")
    with tenant.session() as holder, batch_lock(holder, batch_id) as locked:
        assert locked is not None
        with tenant.session() as s:
            assert heal_batches(s, _client(bank), grace_seconds=60).not_sent == []
    with tenant.session() as s:
        assert heal_batches(s, _client(bank), grace_seconds=60).not_sent == [ids[0]]
