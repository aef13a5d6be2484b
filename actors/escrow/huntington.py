"""Huntington batches: send each ACH/wire item to the bank gateway exactly once, and heal
items whose outcome was lost.

Exactly-once rests on three rules:

1. Every item has one idempotency key for its whole life (``hb<batch>-<item>``). It is
   written and committed, with status SUBMITTING, *before* the bank call; the bank
   de-duplicates on it, so no path can create a second transfer for an item.
2. An item whose call did not end in a definite answer (time-out, dropped connection,
   worker killed or timed out mid-call) is never re-sent blind: the next look at it asks
   the bank by key first (batch resume, or auto-heal), and only a "not found" makes it
   eligible to be sent again, under the same key.
3. One batch is processed by at most one run at a time: a session-level advisory lock
   on a dedicated connection (released by PostgreSQL when the holder dies, even on
   kill -9). Auto-heal takes the same lock per transaction, and ``FOR UPDATE SKIP
   LOCKED`` on items, so two heals never look at the same item.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, text
from sqlalchemy.orm import Session

from actors.escrow.bank_gateway import BankGatewayClient, BankRejected, BankUnavailable, TransferRequest
from actors.escrow.sql import rowcount
from jobcore.errors import ExternalServiceError, OutcomeUnknown, PlatformError

log = logging.getLogger(__name__)

#: First key of the two-int advisory locks on batches ("HB").
LOCK_NAMESPACE = 0x4842
ACTIVE = ("PENDING", "SUBMITTING")


class BatchError(PlatformError):
    """Base of Huntington batch errors."""


class BatchNotFound(BatchError):
    """No batch has the given id."""


class BatchIncomplete(BatchError):
    """The run ended with items failed or awaiting reconciliation (recorded on the items)."""


@dataclass
class BatchOutcome:
    batch_id: int
    status: str
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    busy: bool = False


def idempotency_key(batch_id: int, item_id: int) -> str:
    """The item's one key at the bank."""
    return f"hb{batch_id}-{item_id}"


@contextmanager
def batch_lock(session: Session, batch_id: int, *, wait: float = 10.0) -> Iterator[Session | None]:
    """Take the batch's advisory lock and yield a Session on the very connection that
    holds it (one connection per run: tenant pools are small), or None if another live
    run holds the lock after ``wait`` seconds. A crashed holder's lock is freed by
    PostgreSQL once its connection is gone, which the wait covers."""
    conn: Connection = session.get_bind().connect()  # type: ignore[union-attr]
    got = False
    try:
        deadline = time.monotonic() + wait
        while True:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:ns, :id)"),
                                    {"ns": LOCK_NAMESPACE, "id": batch_id}).scalar_one())
            conn.commit()
            if got or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if not got:
            yield None
        else:
            # Bound to the connection: each commit ends a transaction on it; the lock stays.
            with Session(bind=conn, expire_on_commit=False) as work:
                yield work
    finally:
        try:
            if got:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:ns, :id)"), {"ns": LOCK_NAMESPACE, "id": batch_id})
                conn.commit()
        finally:
            conn.close()


def _transition(session: Session, item_id: int, from_status: str | None, to_status: str, actor: str,
                detail: str | None = None, **values: object) -> bool:
    """Move an item from ``from_status`` to ``to_status`` (conditional) and record the event."""
    sets = ", ".join(f"{k} = :{k}" for k in values)
    sql = f"UPDATE huntington_batch_items SET status = :to, updated_at = now(){', ' + sets if sets else ''} " \
          "WHERE id = :id AND status = :from"
    moved = rowcount(session.execute(text(sql), {"to": to_status, "id": item_id, "from": from_status, **values}))
    if moved:
        _event(session, item_id, from_status, to_status, actor, detail)
    return bool(moved)


def _event(session: Session, item_id: int, from_status: str | None, to_status: str, actor: str,
           detail: str | None) -> None:
    session.execute(text("INSERT INTO huntington_item_events (item_id, from_status, to_status, actor, detail) "
                         "VALUES (:i, :f, :t, :a, :d)"),
                    {"i": item_id, "f": from_status, "t": to_status, "a": actor, "d": detail})


def _settle_batch(session: Session, batch_id: int) -> str:
    """Derive the batch status from its items and store it."""
    rows = session.execute(text("SELECT status, count(*) FROM huntington_batch_items WHERE batch_id = :b "
                                "GROUP BY status"), {"b": batch_id}).all()
    counts: dict[str, int] = {status: n for status, n in rows}
    if counts.get("UNKNOWN") or counts.get("SUBMITTING"):
        status = "NEEDS_RECONCILIATION"
    elif counts.get("FAILED"):
        status = "FAILED"
    elif counts.get("PENDING"):
        status = "PENDING"
    else:
        status = "COMPLETED"
    session.execute(text("UPDATE huntington_batches SET status = :s, finished_at = CASE WHEN :s IN "
                         "('COMPLETED', 'FAILED', 'NEEDS_RECONCILIATION') THEN now() END WHERE id = :b"),
                    {"s": status, "b": batch_id})
    return status


def process_batch(session: Session, batch_id: int, bank: BankGatewayClient, *,
                  actor: str = "PROCESS_HUNTINGTON_BATCH", lock_wait: float = 10.0) -> BatchOutcome:
    """Send every unsent item of the batch to the bank, once. Raises
    :class:`BatchIncomplete` when items end failed or unknown (each recorded on its row)."""
    with batch_lock(session, batch_id, wait=lock_wait) as work:
        if work is None:
            log.warning("batch %s is being processed by another run; this run does nothing", batch_id)
            return BatchOutcome(batch_id, "BUSY", busy=True)
        batch = work.execute(text("SELECT status FROM huntington_batches WHERE id = :b"), {"b": batch_id}).first()
        if batch is None:
            raise BatchNotFound(f"Huntington batch {batch_id} does not exist")
        work.execute(text("UPDATE huntington_batches SET status = 'PROCESSING', started_at = "
                          "coalesce(started_at, now()) WHERE id = :b AND status <> 'COMPLETED'"), {"b": batch_id})
        work.commit()
        outcome = BatchOutcome(batch_id, batch.status)
        items = work.execute(text(
            "SELECT id, status, kind, amount, beneficiary, account_token, idempotency_key "
            "FROM huntington_batch_items WHERE batch_id = :b AND status IN ('PENDING', 'SUBMITTING') ORDER BY id"),
            {"b": batch_id}).all()
        work.commit()
        for item in items:
            result = _send_item(work, batch_id, item, bank, actor)
            if result == "COMPLETED":
                outcome.completed.append(item.id)
            elif result == "FAILED":
                outcome.failed.append(item.id)
            elif result == "UNKNOWN":
                outcome.unknown.append(item.id)
        outcome.status = _settle_batch(work, batch_id)
        work.commit()
    log.info("batch %s: %s (%d completed, %d failed, %d unknown in this run)", batch_id, outcome.status,
             len(outcome.completed), len(outcome.failed), len(outcome.unknown))
    if outcome.status != "COMPLETED":
        raise BatchIncomplete(f"batch {batch_id} is {outcome.status}: failed items {outcome.failed}, "
                              f"unknown items {outcome.unknown}")
    return outcome


def _send_item(session: Session, batch_id: int, item: Row[Any], bank: BankGatewayClient, actor: str) -> str:
    item_id: int = item.id
    key = idempotency_key(batch_id, item_id)
    if item.status == "SUBMITTING":
        # A previous run stopped mid-call: ask the bank before anything else.
        found = bank.get(item.idempotency_key)
        if found is not None:
            _transition(session, item_id, "SUBMITTING", "COMPLETED", actor, "found at bank on resume",
                        bank_transfer_id=found.transfer_id, completed_at=_now(session))
            session.commit()
            return "COMPLETED"
        key = item.idempotency_key
        session.execute(text("UPDATE huntington_batch_items SET attempt = attempt + 1, submitted_at = now(), "
                             "updated_at = now() WHERE id = :i"), {"i": item_id})
        _event(session, item_id, "SUBMITTING", "SUBMITTING", actor, f"not at the bank on resume; re-sent as {key}")
        session.commit()
    else:
        # Rule 1: the key is committed before the bank can possibly see the transfer.
        moved = rowcount(session.execute(text(
            "UPDATE huntington_batch_items SET status = 'SUBMITTING', idempotency_key = :key, attempt = attempt + 1, "
            "submitted_at = now(), updated_at = now() WHERE id = :id AND status = 'PENDING'"),
            {"key": key, "id": item_id}))
        if not moved:
            session.rollback()
            return "SKIPPED"
        _event(session, item_id, "PENDING", "SUBMITTING", actor, f"key {key}")
        session.commit()
    request = TransferRequest(key, item.kind, item.amount, item.beneficiary,
                              item.account_token, f"batch {batch_id} item {item_id}")
    try:
        transfer = bank.submit(request)
    except BankRejected as exc:
        _record(session, item_id, "FAILED", actor, str(exc), retryable=False, last_error=str(exc))
        return "FAILED"
    except BankUnavailable as exc:
        _record(session, item_id, "FAILED", actor, str(exc), retryable=True, last_error=str(exc))
        return "FAILED"
    except OutcomeUnknown as exc:
        _record(session, item_id, "UNKNOWN", actor, str(exc), last_error=str(exc))
        return "UNKNOWN"
    except BaseException as exc:
        # Time limit, revocation, shutdown: the call may have reached the bank.
        _record(session, item_id, "UNKNOWN", actor, f"interrupted: {type(exc).__name__}",
                last_error=f"interrupted during bank call: {type(exc).__name__}")
        raise
    _record(session, item_id, "COMPLETED", actor, f"transfer {transfer.transfer_id}",
            bank_transfer_id=transfer.transfer_id, completed_at=_now(session), retryable=None, last_error=None)
    return "COMPLETED"


def _record(session: Session, item_id: int, to_status: str, actor: str, detail: str, **values: object) -> None:
    session.rollback()
    _transition(session, item_id, "SUBMITTING", to_status, actor, detail, **values)
    session.commit()


def _now(session: Session) -> object:
    return session.execute(text("SELECT now()")).scalar_one()


# -- auto-heal ---------------------------------------------------------------------------
@dataclass
class HealResult:
    completed: list[int] = field(default_factory=list)
    not_sent: list[int] = field(default_factory=list)
    undecided: list[int] = field(default_factory=list)


def heal_batches(session: Session, bank: BankGatewayClient, *, grace_seconds: float = 60.0, limit: int = 500,
                 actor: str = "auto_heal_huntington_batches") -> HealResult:
    """Reconcile items left UNKNOWN (or SUBMITTING by a run that is gone) with the bank.

    Only items untouched for ``grace_seconds`` are considered, so a request still in
    flight is not judged early. Each item is handled in its own transaction holding its
    row lock (``FOR UPDATE SKIP LOCKED``) and its batch's advisory lock, so a concurrent
    heal or a live batch run never sees it at the same time.
    """
    result = HealResult()
    skip: list[int] = [0]
    for _ in range(limit):
        item = session.execute(text(
            "SELECT id, batch_id, status, idempotency_key FROM huntington_batch_items "
            "WHERE status IN ('UNKNOWN', 'SUBMITTING') AND updated_at < now() - make_interval(secs => :grace) "
            "AND id <> ALL(:skip) AND pg_try_advisory_xact_lock(:ns, batch_id) "
            "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"),
            {"grace": grace_seconds, "skip": skip, "ns": LOCK_NAMESPACE}).first()
        if item is None:
            session.commit()
            break
        try:
            transfer = bank.get(item.idempotency_key)
        except ExternalServiceError as exc:
            log.warning("heal: cannot query %s: %s", item.idempotency_key, exc)
            session.rollback()
            result.undecided.append(item.id)
            skip.append(item.id)
            continue
        if transfer is not None:
            _transition(session, item.id, item.status, "COMPLETED", actor, "bank has the transfer (false failure)",
                        bank_transfer_id=transfer.transfer_id, completed_at=_now(session), retryable=None,
                        last_error=None)
            result.completed.append(item.id)
        else:
            reason = f"bank has no transfer under {item.idempotency_key}: not sent; retry re-uses the same key"
            _transition(session, item.id, item.status, "FAILED", actor, reason, retryable=True, last_error=reason)
            result.not_sent.append(item.id)
        _settle_batch(session, item.batch_id)
        session.commit()
    log.info("auto-heal: %d completed, %d not sent, %d undecided", len(result.completed), len(result.not_sent),
             len(result.undecided))
    return result


def requeue_failed_items(session: Session, batch_id: int, *, actor: str = "operator") -> list[int]:
    """Make the retryable FAILED items of a batch PENDING again (same idempotency key);
    a new PROCESS_HUNTINGTON_BATCH run then sends them."""
    ids = session.execute(text("SELECT id FROM huntington_batch_items WHERE batch_id = :b AND status = 'FAILED' "
                               "AND retryable ORDER BY id FOR UPDATE"), {"b": batch_id}).scalars().all()
    for item_id in ids:
        _transition(session, item_id, "FAILED", "PENDING", actor, "requeued for retry", retryable=None)
    _settle_batch(session, batch_id)
    session.commit()
    return list(ids)
