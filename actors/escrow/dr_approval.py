"""DR auto-approval (seed: daily 06:00 ET): approve the disbursement requests whose
auto-authorize window has expired, exactly once each, and notify the case's IPs, IP Reps
and Case Managers through the outbox."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from actors.escrow.mail import Mailer, deliver_outbox, enqueue_notification
from actors.escrow.models import CASE_MANAGER, IP, IP_REP

log = logging.getLogger(__name__)

NOTIFIED_ROLES = (IP, IP_REP, CASE_MANAGER)


@dataclass
class ApprovalResult:
    approved: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # changed or approved by someone else meanwhile
    notified: int = 0
    emailed: int = 0


def approve_due_requests(session: Session, mailer: Mailer | None, *, now: dt.datetime | None = None,
                         limit: int = 1000) -> ApprovalResult:
    """Approve every PENDING request with ``auto_authorize_at <= now``.

    Each approval is a conditional UPDATE on the (status, version) the job read, so a
    request approved by a concurrent run, or edited meanwhile (which bumps its version),
    is left alone. The approval and its outbox rows commit together; e-mails go out after.
    """
    at = now or dt.datetime.now(dt.UTC)
    result = ApprovalResult()
    due = session.execute(text(
        "SELECT id, version FROM disbursement_requests WHERE status = 'PENDING' AND auto_authorize_at <= :at "
        "ORDER BY auto_authorize_at, id LIMIT :limit"), {"at": at, "limit": limit}).all()
    session.commit()
    for dr_id, version in due:
        row = session.execute(text(
            "UPDATE disbursement_requests SET status = 'APPROVED', version = version + 1, approved_at = :at, "
            "approved_by = 'auto_authorize', updated_at = now() "
            "WHERE id = :id AND status = 'PENDING' AND version = :v AND auto_authorize_at <= :at "
            "RETURNING id, case_id, payee, amount"), {"id": dr_id, "v": version, "at": at}).first()
        if row is None:
            session.rollback()
            result.skipped.append(dr_id)
            log.info("DR %s changed or approved meanwhile; not approved by this run", dr_id)
            continue
        result.notified += _notify_parties(session, row.id, row.case_id, row.payee, row.amount)
        session.commit()
        result.approved.append(dr_id)
    if mailer is not None:
        result.emailed = deliver_outbox(session, mailer)
    log.info("DR auto-approval: %d approved, %d skipped", len(result.approved), len(result.skipped))
    return result


def _notify_parties(session: Session, dr_id: int, case_id: int, payee: str, amount: object) -> int:
    parties = session.execute(text(
        "SELECT DISTINCT u.id, u.email, u.name, c.number FROM case_parties p JOIN users u ON u.id = p.user_id "
        "JOIN cases c ON c.id = p.case_id WHERE p.case_id = :case AND p.role = ANY(:roles) AND u.active "
        "ORDER BY u.id"), {"case": case_id, "roles": list(NOTIFIED_ROLES)}).all()
    added = 0
    for user_id, email, name, case_number in parties:
        added += enqueue_notification(
            session, kind="dr_approved", dedupe_key=f"dr_approved:{dr_id}:{user_id}", user_id=user_id,
            recipient=email, subject=f"Disbursement request #{dr_id} approved (case {case_number})",
            body=(f"Hello {name},\n\nDisbursement request #{dr_id} on case {case_number} "
                  f"({amount} to {payee}) was approved automatically: its auto-authorize window expired.\n"))
    return added
