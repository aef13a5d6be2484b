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
   kill -9); behind PgBouncer in transaction mode that connection goes to the server
   directly (``PG_DIRECT_ADDRESS``), since a pooled one could run the unlock on another
   server session and leave the lock held. A run that cannot get it raises :class:`BatchBusy`, which the actor retries
   later. Auto-heal (:mod:`actors.escrow.huntington_heal`) takes the same lock, briefly,
   only to record a decision.

Runs are stopped by a revoke only between items (:func:`jobcore.revocation.checkpoint`),
never between recording an item's key and calling the bank: the money actors are
``interruptible=False``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dramatiq.errors import Retry
from sqlalchemy import Connection, Row, text
from sqlalchemy.orm import Session

from actors.escrow.bank_gateway import BankGatewayClient, BankRejected, BankUnavailable, TransferRequest
from actors.escrow.sql import rowcount
from jobcore.errors import JobRevoked, OutcomeUnknown, PlatformError
from ledger.revocation import checkpoint
from tenancy.session import session_level_connection

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


class BatchBusy(BatchError, Retry):
    """Another live run holds the batch lock. A dramatiq ``Retry`` too, so the actor's
    retry policy re-enqueues the message after ``delay`` ms instead of ending it."""

    def __init__(self, message: str = "", delay: int | None = None) -> None:
        Retry.__init__(self, message, delay)


@dataclass
class BatchOutcome:
    batch_id: int
    status: str
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)


def idempotency_key(batch_id: int, item_id: int) -> str:
    """The item's one key at the bank."""
    return f"hb{batch_id}-{item_id}"


@contextmanager
def batch_lock(session: Session, batch_id: int, *, wait: float = 10.0) -> Iterator[Session | None]:
    """Take the batch's advisory lock and yield a Session on the very connection that
    holds it (one connection per run: tenant pools are small), or None if another live
    run holds the lock after ``wait`` seconds. A crashed holder's lock is freed by
    PostgreSQL once its connection is gone, which the wait covers."""
    # Its own server session (direct to PostgreSQL behind PgBouncer: tenancy.session).
    conn: Connection = session_level_connection(session)
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


def transition(session: Session, item_id: int, from_status: str | None, to_status: str, actor: str,
               detail: str | None = None, **values: object) -> bool:
    """Move an item from ``from_status`` to ``to_status`` (conditional) and record the event."""
    sets = ", ".join(f"{k} = :{k}" for k in values)
    sql = f"UPDATE huntington_batch_items SET status = :to, updated_at = now(){', ' + sets if sets else ''} " \
          "WHERE id = :id AND status = :from"
    moved = rowcount(session.execute(text(sql), {"to": to_status, "id": item_id, "from": from_status, **values}))
    if moved:
        event(session, item_id, from_status, to_status, actor, detail)
    return bool(moved)


def event(session: Session, item_id: int, from_status: str | None, to_status: str, actor: str,
          detail: str | None) -> None:
    """Append one row to the item's history (``huntington_item_events``)."""
    session.execute(text("INSERT INTO huntington_item_events (item_id, from_status, to_status, actor, detail) "
                         "VALUES (:i, :f, :t, :a, :d)"),
                    {"i": item_id, "f": from_status, "t": to_status, "a": actor, "d": detail})


def settle_batch(session: Session, batch_id: int) -> str:
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
                  actor: str = "PROCESS_HUNTINGTON_BATCH", lock_wait: float = 10.0,
                  busy_retry_ms: int | None = None) -> BatchOutcome:
    """Send every unsent item of the batch to the bank, once. Raises :class:`BatchBusy`
    (recorded on the batch) when another run holds the batch for ``lock_wait`` seconds,
    and :class:`BatchIncomplete` when items end failed or unknown (each on its row)."""
    with batch_lock(session, batch_id, wait=lock_wait) as work:
        outcome = send_locked(work, batch_id, bank, actor) if work is not None else None
    if outcome is None:
        raise busy(session, batch_id, busy_retry_ms)
    log.info("batch %s: %s (%d completed, %d failed, %d unknown in this run)", batch_id, outcome.status,
             len(outcome.completed), len(outcome.failed), len(outcome.unknown))
    if outcome.status != "COMPLETED":
        raise BatchIncomplete(f"batch {batch_id} is {outcome.status}: failed items {outcome.failed}, "
                              f"unknown items {outcome.unknown}")
    return outcome


def busy(session: Session, batch_id: int, retry_ms: int | None) -> BatchBusy:
    """Record on the batch that this run found it locked, and return the error to raise."""
    when = f"in {retry_ms / 1000:g} s" if retry_ms else "later"
    message = f"batch {batch_id} is held by another live run; this run retries {when}"
    log.warning("%s", message)
    session.execute(text("UPDATE huntington_batches SET last_error = :e WHERE id = :b"),
                    {"e": message, "b": batch_id})
    session.commit()
    return BatchBusy(message, delay=retry_ms)


def send_locked(work: Session, batch_id: int, bank: BankGatewayClient, actor: str) -> BatchOutcome:
    """The body of a batch run, on the session that holds the batch lock."""
    batch = work.execute(text("SELECT status FROM huntington_batches WHERE id = :b"), {"b": batch_id}).first()
    if batch is None:
        raise BatchNotFound(f"Huntington batch {batch_id} does not exist")
    work.execute(text("UPDATE huntington_batches SET status = 'PROCESSING', last_error = NULL, started_at = "
                      "coalesce(started_at, now()) WHERE id = :b AND status <> 'COMPLETED'"), {"b": batch_id})
    work.commit()
    outcome = BatchOutcome(batch_id, batch.status)
    items = work.execute(text(
        "SELECT id, status, kind, amount, beneficiary, account_token, idempotency_key "
        "FROM huntington_batch_items WHERE batch_id = :b AND status IN ('PENDING', 'SUBMITTING') ORDER BY id"),
        {"b": batch_id}).all()
    work.commit()
    try:
        for item in items:
            # The only place a revoke stops a batch: between items, never between
            # recording an item's key and calling the bank.
            checkpoint()
            result = _send_item(work, batch_id, item, bank, actor)
            if result == "COMPLETED":
                outcome.completed.append(item.id)
            elif result == "FAILED":
                outcome.failed.append(item.id)
            elif result == "UNKNOWN":
                outcome.unknown.append(item.id)
    except JobRevoked:
        work.rollback()
        status = settle_batch(work, batch_id)
        work.execute(text("UPDATE huntington_batches SET last_error = :e WHERE id = :b"), {
            "b": batch_id, "e": f"revoked by an operator after {len(outcome.completed)} item(s) completed in "
                                f"this run; the unsent items are {status} (re-send them to continue)"})
        work.commit()
        log.warning("batch %s revoked between items: %d completed in this run, batch now %s", batch_id,
                    len(outcome.completed), status)
        raise
    outcome.status = settle_batch(work, batch_id)
    work.commit()
    return outcome


def _send_item(session: Session, batch_id: int, item: Row[Any], bank: BankGatewayClient, actor: str) -> str:
    item_id: int = item.id
    key = idempotency_key(batch_id, item_id)
    if item.status == "SUBMITTING":
        # A previous run stopped mid-call: ask the bank before anything else.
        found = bank.get(item.idempotency_key)
        if found is not None:
            transition(session, item_id, "SUBMITTING", "COMPLETED", actor, "found at bank on resume",
                        bank_transfer_id=found.transfer_id, completed_at=db_now(session))
            session.commit()
            return "COMPLETED"
        key = item.idempotency_key
        session.execute(text("UPDATE huntington_batch_items SET attempt = attempt + 1, submitted_at = now(), "
                             "updated_at = now() WHERE id = :i"), {"i": item_id})
        event(session, item_id, "SUBMITTING", "SUBMITTING", actor, f"not at the bank on resume; re-sent as {key}")
        session.commit()
    else:
        # Rule 1: the key is committed before the bank can possibly see the transfer. An
        # item re-sent after a failure keeps the key it had.
        key = item.idempotency_key or key
        moved = rowcount(session.execute(text(
            "UPDATE huntington_batch_items SET status = 'SUBMITTING', idempotency_key = :key, attempt = attempt + 1, "
            "submitted_at = now(), updated_at = now() WHERE id = :id AND status = 'PENDING'"),
            {"key": key, "id": item_id}))
        if not moved:
            session.rollback()
            return "SKIPPED"
        event(session, item_id, "PENDING", "SUBMITTING", actor, f"key {key}")
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
            bank_transfer_id=transfer.transfer_id, completed_at=db_now(session), retryable=None, last_error=None)
    return "COMPLETED"


def _record(session: Session, item_id: int, to_status: str, actor: str, detail: str, **values: object) -> None:
    session.rollback()
    transition(session, item_id, "SUBMITTING", to_status, actor, detail, **values)
    session.commit()


def db_now(session: Session) -> object:
    """The database's ``now()`` (timestamps come from one clock)."""
    return session.execute(text("SELECT now()")).scalar_one()
