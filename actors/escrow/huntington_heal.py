"""Auto-heal: settle Huntington items whose bank call ended without a definite answer
(UNKNOWN, or SUBMITTING by a run that is gone) by asking the bank under their key.

No database transaction or lock is held while the bank is asked:

1. The candidates are read first, in one short transaction, without any lock.
2. Per batch, a momentary ``pg_try_advisory_xact_lock`` tells whether a live run holds
   the batch; if one does, the batch is left to it (a run resumes such items itself).
3. The bank is asked with no transaction open.
4. The answer is recorded in a short transaction that takes that one batch's lock
   explicitly and re-reads the item: if the item changed since step 1 (another heal or a
   run got there first), it is left alone. So two heals, or a heal and a run, never
   record two decisions for one item.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from actors.escrow.bank_gateway import BankGatewayClient, Transfer
from actors.escrow.huntington import LOCK_NAMESPACE, db_now, settle_batch, transition
from jobcore.errors import ExternalServiceError
from ledger.revocation import checkpoint

log = logging.getLogger(__name__)

CANDIDATES = text(
    "SELECT id, batch_id, status, idempotency_key, updated_at, attempt FROM huntington_batch_items "
    "WHERE status IN ('UNKNOWN', 'SUBMITTING') AND updated_at < now() - make_interval(secs => :grace) "
    "ORDER BY batch_id, id LIMIT :limit")
TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:ns, :b)")


@dataclass
class HealResult:
    completed: list[int] = field(default_factory=list)
    not_sent: list[int] = field(default_factory=list)
    undecided: list[int] = field(default_factory=list)  # the bank could not tell
    skipped: list[int] = field(default_factory=list)  # a live run or another heal had it


def heal_batches(session: Session, bank: BankGatewayClient, *, grace_seconds: float = 60.0, limit: int = 500,
                 actor: str = "auto_heal_huntington_batches") -> HealResult:
    """Reconcile items left UNKNOWN or SUBMITTING for ``grace_seconds`` (so a request still
    in flight is not judged early) with the bank; see the module docstring for the locking.
    Stops at a revoke between items (:func:`jobcore.revocation.checkpoint`)."""
    result = HealResult()
    candidates = session.execute(CANDIDATES, {"grace": grace_seconds, "limit": limit}).all()
    session.commit()
    for batch_id, rows in groupby(candidates, key=lambda r: int(r.batch_id)):
        items = list(rows)
        if not _try_lock(session, batch_id, attempts=1):
            session.commit()
            result.skipped.extend(r.id for r in items)
            log.info("heal: batch %s is being processed by a live run; left to it", batch_id)
            continue
        session.commit()  # the lock was only a probe: released before any bank call
        for n, item in enumerate(items):
            checkpoint()
            try:
                transfer = bank.get(item.idempotency_key)
            except ExternalServiceError as exc:
                log.warning("heal: cannot query %s: %s", item.idempotency_key, exc)
                result.undecided.append(item.id)
                continue
            decided = _record(session, item, transfer, actor)
            if decided == "busy":  # a run took the batch meanwhile: it owns these items now
                result.skipped.extend(r.id for r in items[n:])
                break
            if decided == "completed":
                result.completed.append(item.id)
            elif decided == "not_sent":
                result.not_sent.append(item.id)
            else:
                result.skipped.append(item.id)
    log.info("auto-heal: %d completed, %d not sent, %d undecided, %d skipped", len(result.completed),
             len(result.not_sent), len(result.undecided), len(result.skipped))
    return result


def _try_lock(session: Session, batch_id: int, *, attempts: int) -> bool:
    """Take the batch's advisory lock for the current transaction. Another heal's probe or
    record holds it for milliseconds, so a few short tries tell it apart from a live run."""
    for n in range(attempts):
        if session.execute(TRY_LOCK, {"ns": LOCK_NAMESPACE, "b": batch_id}).scalar_one():
            return True
        if n + 1 < attempts:
            time.sleep(0.05)
    return False


def _record(session: Session, item: Row[Any], transfer: Transfer | None, actor: str) -> str:
    """Record the bank's answer for ``item`` under its batch lock, unless the item changed."""
    try:
        if not _try_lock(session, item.batch_id, attempts=20):
            return "busy"
        now = session.execute(text("SELECT status, updated_at, attempt FROM huntington_batch_items WHERE id = :i "
                                   "FOR UPDATE"), {"i": item.id}).first()
        if now is None or (now.status, now.updated_at, now.attempt) != (item.status, item.updated_at, item.attempt):
            return "changed"
        if transfer is not None:
            transition(session, item.id, item.status, "COMPLETED", actor, "bank has the transfer (false failure)",
                       bank_transfer_id=transfer.transfer_id, completed_at=db_now(session), retryable=None,
                       last_error=None)
            decided = "completed"
        else:
            reason = f"bank has no transfer under {item.idempotency_key}: not sent; retry re-uses the same key"
            transition(session, item.id, item.status, "FAILED", actor, reason, retryable=True, last_error=reason)
            decided = "not_sent"
        settle_batch(session, item.batch_id)
        session.commit()
        return decided
    finally:
        session.rollback()  # no-op after a commit; ends the transaction (and its lock) otherwise
