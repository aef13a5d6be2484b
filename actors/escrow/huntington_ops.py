"""Operator actions on Huntington batches: list what was not sent, and re-send it.

A re-send keeps every item's idempotency key, asks the bank about each failed item
before re-sending it (an item the bank already has is completed, not sent again), and
leaves an audit record (``huntington_operator_actions``: who, when, which items, why)
as well as one ``huntington_item_events`` row per item moved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from actors.escrow.bank_gateway import BankGatewayClient
from actors.escrow.huntington import (
    BatchIncomplete,
    BatchNotFound,
    BatchOutcome,
    batch_lock,
    busy,
    db_now,
    send_locked,
    settle_batch,
    transition,
)
from actors.escrow.models import HuntingtonBatch, HuntingtonOperatorAction

log = logging.getLogger(__name__)

RESEND = "resend"
# Items a re-send picks up: never sent (PENDING), or definitely not committed at the bank
# (FAILED and retryable: a 5xx, or auto-heal found nothing under the key). A rejected
# item (4xx, retryable false) is only included on request, after its data was corrected.
UNSENT = text(
    "SELECT id, status, retryable, idempotency_key, amount, kind, last_error FROM huntington_batch_items "
    "WHERE batch_id = :b AND (status = 'PENDING' OR (status = 'FAILED' AND (retryable OR :rejected))) ORDER BY id")


@dataclass
class ResendResult:
    batch_id: int
    operator: str
    requeued: list[int] = field(default_factory=list)
    found_at_bank: list[int] = field(default_factory=list)
    outcome: BatchOutcome | None = None
    audit_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (actor result, operator command output)."""
        out = self.outcome
        return {"batch_id": self.batch_id, "operator": self.operator, "requeued": self.requeued,
                "found_at_bank": self.found_at_bank, "audit_id": self.audit_id,
                "status": out.status if out else None, "completed": out.completed if out else [],
                "failed": out.failed if out else [], "unknown": out.unknown if out else []}


def unsent_items(session: Session, batch_id: int, *, include_rejected: bool = False) -> list[dict[str, Any]]:
    """The items of the batch that a re-send would pick up (read only)."""
    rows = session.execute(UNSENT, {"b": batch_id, "rejected": include_rejected}).mappings().all()
    session.commit()
    return [{k: (str(v) if isinstance(v, Decimal) else v) for k, v in r.items()} for r in rows]


def batches_with_unsent_items(session: Session) -> list[dict[str, Any]]:
    """Every batch that has items not sent (PENDING or FAILED), with counts per kind."""
    rows = session.execute(text(
        "SELECT b.id AS batch_id, b.status, b.last_error, "
        "count(*) FILTER (WHERE i.status = 'PENDING') AS pending, "
        "count(*) FILTER (WHERE i.status = 'FAILED' AND i.retryable) AS failed_not_sent, "
        "count(*) FILTER (WHERE i.status = 'FAILED' AND NOT coalesce(i.retryable, false)) AS rejected "
        "FROM huntington_batches b JOIN huntington_batch_items i ON i.batch_id = b.id "
        "WHERE i.status IN ('PENDING', 'FAILED') GROUP BY b.id ORDER BY b.id")).mappings().all()
    session.commit()
    return [dict(r) for r in rows]


def resend_unsent_items(session: Session, batch_id: int, bank: BankGatewayClient, *, operator: str,
                        reason: str | None = None, include_rejected: bool = False,
                        job_message_id: str | None = None, lock_wait: float = 10.0,
                        busy_retry_ms: int | None = None) -> ResendResult:
    """Re-send the batch's unsent items under their existing idempotency keys, as one run
    holding the batch lock. Each FAILED item is first looked up at the bank by its key: if
    the bank has it, it is completed, not re-sent. Raises :class:`BatchBusy` when another
    run holds the batch and :class:`BatchIncomplete` when items fail again (both after the
    audit record is committed)."""
    if not operator.strip():
        raise ValueError("a re-send needs the operator's name (audit record)")
    actor = f"operator:{operator}"[:40]
    result = ResendResult(batch_id, operator)
    with batch_lock(session, batch_id, wait=lock_wait) as work:
        if work is not None:
            _requeue(work, result, bank, actor, include_rejected)
            audit = HuntingtonOperatorAction(batch_id=batch_id, action=RESEND, operator=operator[:100], reason=reason,
                                             item_ids=sorted(result.requeued + result.found_at_bank),
                                             job_message_id=job_message_id,
                                             detail=f"re-sent {result.requeued}; already at the bank "
                                                    f"{result.found_at_bank}")
            base = audit.detail
            work.add(audit)
            work.commit()
            result.audit_id = audit.id
            try:
                result.outcome = send_locked(work, batch_id, bank, actor)
            finally:
                _finish_audit(work, audit, base, result.outcome)
    if result.audit_id is None:
        raise busy(session, batch_id, busy_retry_ms)
    assert result.outcome is not None
    log.info("batch %s re-sent by %s: %s requeued, %s already at the bank, batch now %s", batch_id, operator,
             result.requeued, result.found_at_bank, result.outcome.status)
    if result.outcome.status != "COMPLETED":
        raise BatchIncomplete(f"batch {batch_id} is {result.outcome.status} after the re-send by {operator}: "
                              f"failed items {result.outcome.failed}, unknown items {result.outcome.unknown}")
    return result


def _requeue(work: Session, result: ResendResult, bank: BankGatewayClient, actor: str,
             include_rejected: bool) -> None:
    """FAILED items back to PENDING (the bank asked first); PENDING ones are sent as they are."""
    if work.scalar(select(HuntingtonBatch.id).where(HuntingtonBatch.id == result.batch_id)) is None:
        raise BatchNotFound(f"Huntington batch {result.batch_id} does not exist")
    items = work.execute(UNSENT, {"b": result.batch_id, "rejected": include_rejected}).all()
    work.commit()
    for item in items:
        if item.status == "FAILED" and item.idempotency_key:
            # Under the batch lock no run can send it meanwhile; the bank call is outside
            # any transaction.
            found = bank.get(item.idempotency_key)
            if found is not None:
                transition(work, item.id, "FAILED", "COMPLETED", actor, "bank already has the transfer; not re-sent",
                           bank_transfer_id=found.transfer_id, completed_at=db_now(work), retryable=None,
                           last_error=None)
                work.commit()
                result.found_at_bank.append(item.id)
                continue
        if item.status == "FAILED":
            transition(work, item.id, "FAILED", "PENDING", actor,
                       f"re-send requested; same key {item.idempotency_key}", retryable=None)
        result.requeued.append(item.id)
    settle_batch(work, result.batch_id)
    work.commit()


def _finish_audit(work: Session, audit: HuntingtonOperatorAction, base: str | None,
                  outcome: BatchOutcome | None) -> None:
    """Add the run's outcome to the audit record; never hides the run's own error."""
    audit_id, batch_id = audit.id, audit.batch_id
    try:
        work.rollback()
        audit.detail = (f"{base}; outcome {outcome.status}: completed {outcome.completed}, failed {outcome.failed}, "
                        f"unknown {outcome.unknown}" if outcome else f"{base}; the run stopped before the end")
        work.commit()
    except Exception:
        log.exception("batch %s: could not add the outcome to audit record %s", batch_id, audit_id)
