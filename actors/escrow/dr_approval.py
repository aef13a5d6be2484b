"""DR auto-approval (seed: daily 06:00 ET): approve the disbursement requests whose
auto-authorize window has expired, exactly once each, and notify the case's IPs, IP Reps
and Case Managers through the outbox.

Every due request is handled in one run, in batches of ``batch_size``: a batch's
approvals and their outbox rows commit together, so a crash mid-run loses nothing that
was committed and a re-run approves only what is still PENDING. The run then delivers
the whole outbox (every notification the approvals queued): a refused recipient is recorded
on its row and the rest still go; only an SMTP server that cannot be reached stops it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from actors.escrow.mail import Mailer, deliver_outbox
from actors.escrow.models import CASE_MANAGER, IP, IP_REP, Notification

log = logging.getLogger(__name__)

NOTIFIED_ROLES = (IP, IP_REP, CASE_MANAGER)
DEFAULT_BATCH_SIZE = 500

# Keyset pagination on (auto_authorize_at, id): a request skipped because it changed
# meanwhile is not read again in this run, and the run always ends.
DUE = text(
    "SELECT id, version, auto_authorize_at FROM disbursement_requests "
    "WHERE status = 'PENDING' AND auto_authorize_at <= :at AND (auto_authorize_at, id) > (:after_at, :after_id) "
    "ORDER BY auto_authorize_at, id LIMIT :n")
# Conditional on the (status, version) read: a request approved by a concurrent run, or
# edited meanwhile (an edit bumps its version), is left alone.
APPROVE = text(
    "UPDATE disbursement_requests SET status = 'APPROVED', version = disbursement_requests.version + 1, "
    "approved_at = :at, approved_by = 'auto_authorize', updated_at = now() "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:versions AS integer[])) AS seen(id, version) "
    "WHERE disbursement_requests.id = seen.id AND disbursement_requests.version = seen.version "
    "AND disbursement_requests.status = 'PENDING' AND disbursement_requests.auto_authorize_at <= :at "
    "RETURNING disbursement_requests.id, case_id, payee, amount")
PARTIES = text(
    "SELECT DISTINCT p.case_id, u.id, u.email, u.name, c.number FROM case_parties p "
    "JOIN users u ON u.id = p.user_id JOIN cases c ON c.id = p.case_id "
    "WHERE p.case_id = ANY(:cases) AND p.role = ANY(:roles) AND u.active ORDER BY p.case_id, u.id")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class ApprovalResult:
    approved: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # changed or approved by someone else meanwhile
    notified: int = 0
    emailed: int = 0
    batches: int = 0


def approve_due_requests(session: Session, mailer: Mailer | None, *, now: dt.datetime | None = None,
                         batch_size: int = DEFAULT_BATCH_SIZE) -> ApprovalResult:
    """Approve every PENDING request with ``auto_authorize_at <= now``, ``batch_size`` per
    committed transaction, then deliver the outbox until it is empty (``mailer`` None:
    approvals only). An SMTP failure is raised after every approval is committed."""
    at = now or dt.datetime.now(dt.UTC)
    result = ApprovalResult()
    after: tuple[dt.datetime, int] = (EPOCH, 0)
    while True:
        due = session.execute(DUE, {"at": at, "after_at": after[0], "after_id": after[1],
                                    "n": batch_size}).all()
        if not due:
            session.commit()
            break
        after = (due[-1].auto_authorize_at, due[-1].id)
        approved = session.execute(APPROVE, {"at": at, "ids": [r.id for r in due],
                                             "versions": [r.version for r in due]}).all()
        result.notified += _notify_parties(session, approved)
        session.commit()
        done = {r.id for r in approved}
        result.approved.extend(r.id for r in due if r.id in done)
        result.skipped.extend(r.id for r in due if r.id not in done)
        result.batches += 1
        log.info("DR auto-approval batch %d: %d approved, %d skipped", result.batches, len(done),
                 len(due) - len(done))
    if result.skipped:
        log.info("DRs changed or approved meanwhile, not approved by this run: %s", result.skipped[:50])
    if mailer is not None:
        result.emailed = deliver_all(session, mailer)
    log.info("DR auto-approval: %d approved, %d skipped, %d notifications queued, %d e-mailed",
             len(result.approved), len(result.skipped), result.notified, result.emailed)
    return result


def deliver_all(session: Session, mailer: Mailer) -> int:
    """Deliver the whole outbox (every notification due); returns how many were sent.
    A refused message is recorded on its row and the others still go; an SMTP server
    that cannot be reached raises :class:`~actors.escrow.mail.MailError`, the rows
    staying PENDING (uncharged) for the next run."""
    outcome = deliver_outbox(session, mailer)
    if outcome.refused:
        log.warning("DR auto-approval outbox: %d notification(s) refused (%d FAILED for good)", outcome.refused,
                    outcome.failed)
    return outcome.sent


def _notify_parties(session: Session, approved: Sequence[Any]) -> int:
    """One outbox row per approved request and notified party, in the caller's transaction
    (so the approval and its notices commit together); returns the rows added."""
    if not approved:
        return 0
    parties: dict[int, list[Any]] = {}
    for row in session.execute(PARTIES, {"cases": sorted({r.case_id for r in approved}),
                                         "roles": list(NOTIFIED_ROLES)}):
        parties.setdefault(row.case_id, []).append(row)
    values = [
        {"kind": "dr_approved", "dedupe_key": f"dr_approved:{dr.id}:{p.id}", "user_id": p.id, "recipient": p.email,
         "subject": f"Disbursement request #{dr.id} approved (case {p.number})",
         "body": (f"Hello {p.name},\n\nDisbursement request #{dr.id} on case {p.number} "
                  f"({dr.amount} to {dr.payee}) was approved automatically: its auto-authorize window expired.\n")}
        for dr in approved for p in parties.get(dr.case_id, [])]
    if not values:
        return 0
    added = 0
    for start in range(0, len(values), 1000):  # bounded statement size
        stmt = insert(Notification).values(values[start:start + 1000]).on_conflict_do_nothing(
            index_elements=["dedupe_key"]).returning(Notification.id)
        added += len(session.execute(stmt).all())
    return added
