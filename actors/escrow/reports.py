"""Report generation (every minute): the seed's queue, status 1 pending -> 2 in progress
-> 3 emailed, with ``FOR UPDATE SKIP LOCKED`` claims, leases and expired-lease reclaim.

A claim sets a fresh ``claim_token`` and a lease; completion is fenced on that token, so
a worker whose lease expired (and whose request was reclaimed) cannot overwrite the new
owner's outcome.

Attempts are charged per request, with time-based back-off kept on the row
(``next_attempt_at``), so that neither the broker's quick retries of a failed run nor
the every-minute schedule can spend a request's attempts during one outage:

* a failure of the request itself (bad data, a refused recipient) charges the attempt
  and sets ``next_attempt_at`` to ``backoff_s * 2**(attempts-1)`` from now; after
  ``max_attempts`` the request fails for good (status 4, ``failed_at``), which the
  exporter counts and alerts on;
* a service failure (SMTP server or database unreachable, see
  :mod:`actors.escrow.outages`) refunds the attempt and stops the run: the next run
  (every minute) picks the request up again, however long the outage lasts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage

from sqlalchemy import text
from sqlalchemy.orm import Session

from actors.escrow.mail import Mailer
from actors.escrow.models import REPORT_EMAILED, REPORT_FAILED, REPORT_IN_PROGRESS, REPORT_PENDING
from actors.escrow.outages import is_service_failure
from actors.escrow.sql import rowcount
from jobcore.errors import ExternalServiceError, PlatformError

log = logging.getLogger(__name__)

DEFAULT_LEASE = dt.timedelta(minutes=10)
MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 180.0
MAX_BACKOFF_S = 3600.0


class ReportError(PlatformError):
    """A report could not be generated or delivered."""


class ReportsFailed(ReportError):
    """At least one request failed in this run (each failure is recorded on its row)."""


class ReportServiceDown(ReportError, ExternalServiceError):
    """SMTP or the database failed for every request: the run stopped, no attempt charged."""


@dataclass
class Claim:
    id: int
    token: str
    user_id: int
    case_id: int | None
    report_type: str
    attempts: int


def claim_next(session: Session, *, lease: dt.timedelta = DEFAULT_LEASE, skip: list[int] | None = None
               ) -> Claim | None:
    """Claim the oldest pending request that is due (not backing off), or one whose lease
    expired, other than the ids in ``skip``; commit; return it. A claim counts as an
    attempt (a worker that dies mid-report spends it); :func:`refund` gives it back."""
    token = uuid.uuid4().hex
    row = session.execute(text(
        "UPDATE report_requests SET status = :inprog, claim_token = :token, claimed_at = now(), "
        "lease_until = now() + :lease, attempts = attempts + 1 "
        "WHERE id = (SELECT id FROM report_requests "
        "            WHERE ((status = :pending AND (next_attempt_at IS NULL OR next_attempt_at <= now())) "
        "                   OR (status = :inprog AND lease_until < now())) AND id <> ALL(:skip) "
        "            ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1) "
        "RETURNING id, user_id, case_id, report_type, attempts"),
        {"inprog": REPORT_IN_PROGRESS, "pending": REPORT_PENDING, "token": token, "lease": lease,
         "skip": skip or [0]}).first()
    session.commit()
    if row is None:
        return None
    return Claim(row.id, token, row.user_id, row.case_id, row.report_type, row.attempts)


def complete(session: Session, claim: Claim, file_name: str) -> bool:
    """Mark the claimed request emailed (3); False if the claim was lost meanwhile."""
    done = rowcount(session.execute(text(
        "UPDATE report_requests SET status = :done, completed_at = now(), file_name = :f, lease_until = NULL, "
        "last_error = NULL WHERE id = :id AND claim_token = :token AND status = :inprog"),
        {"done": REPORT_EMAILED, "f": file_name, "id": claim.id, "token": claim.token,
         "inprog": REPORT_IN_PROGRESS}))
    session.commit()
    return bool(done)


def fail(session: Session, claim: Claim, error: str, *, max_attempts: int = MAX_ATTEMPTS,
         backoff_s: float = DEFAULT_BACKOFF_S) -> int:
    """Record a failure of the request itself: back to pending, not before its back-off
    has passed, or failed for good (4) after ``max_attempts``. Returns the new status."""
    final = claim.attempts >= max_attempts
    delay = min(backoff_s * 2 ** max(claim.attempts - 1, 0), MAX_BACKOFF_S)
    session.execute(text(
        "UPDATE report_requests SET status = :s, last_error = :e, lease_until = NULL, "
        "next_attempt_at = CASE WHEN :final THEN NULL ELSE now() + make_interval(secs => :delay) END, "
        "failed_at = CASE WHEN :final THEN now() END "
        "WHERE id = :id AND claim_token = :token"),
        {"s": REPORT_FAILED if final else REPORT_PENDING, "e": error[:2000], "final": final, "delay": delay,
         "id": claim.id, "token": claim.token})
    session.commit()
    return REPORT_FAILED if final else REPORT_PENDING


def refund(session: Session, claim: Claim, error: str) -> None:
    """A service failure: the request goes back to pending as it was, attempt not charged."""
    session.execute(text(
        "UPDATE report_requests SET status = :pending, attempts = greatest(attempts - 1, 0), last_error = :e, "
        "lease_until = NULL WHERE id = :id AND claim_token = :token"),
        {"pending": REPORT_PENDING, "e": error[:2000], "id": claim.id, "token": claim.token})
    session.commit()


def requeue_failed_reports(session: Session, *, operator: str, request_ids: list[int] | None = None) -> list[int]:
    """Operator: put requests that failed for good (4) back in the queue with fresh
    attempts (all of them, or only ``request_ids``); returns the ids requeued."""
    ids = session.execute(text(
        "UPDATE report_requests SET status = :pending, attempts = 0, next_attempt_at = NULL, failed_at = NULL, "
        "last_error = left(:note || coalesce(last_error, ''), 2000) "
        "WHERE status = :failed AND (CAST(:ids AS integer[]) IS NULL OR id = ANY(:ids)) RETURNING id"),
        {"pending": REPORT_PENDING, "failed": REPORT_FAILED, "ids": request_ids,
         "note": f"[requeued by {operator}] "}).scalars().all()
    session.commit()
    log.info("%s requeued %d failed report request(s): %s", operator, len(ids), sorted(ids))
    return sorted(ids)


# -- report content -------------------------------------------------------------------
HEADER = ["case_number", "case_name", "case_status", "balance", "minimum_balance", "dr_id", "payee", "amount",
          "dr_status", "auto_authorize_at", "approved_at"]


def build_case_report(session: Session, case_id: int | None) -> tuple[str, bytes]:
    """A CSV of cases (one case, or all active ones) with their disbursement requests."""
    where = "c.id = :case" if case_id is not None else "c.status = 'ACTIVE'"
    cases = session.execute(text(f"SELECT id FROM cases c WHERE {where}"), {"case": case_id}).scalars().all()
    if case_id is not None and not cases:
        raise ReportError(f"case {case_id} does not exist")
    rows = session.execute(text(
        "SELECT c.number, c.name, c.status, c.balance, c.minimum_balance, d.id, d.payee, d.amount, d.status, "
        "d.auto_authorize_at, d.approved_at FROM cases c LEFT JOIN disbursement_requests d ON d.case_id = c.id "
        f"WHERE {where} ORDER BY c.number, d.id"), {"case": case_id}).all()
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER)
    for r in rows:
        writer.writerow(["" if v is None else (v.isoformat() if isinstance(v, dt.datetime) else v) for v in r])
    name = f"case-{case_id}-report.csv" if case_id is not None else "active-cases-report.csv"
    return name, buf.getvalue().encode()


REPORT_BUILDERS = {"case_summary": build_case_report}


@dataclass
class ReportRun:
    emailed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)


def process_reports(session: Session, mailer: Mailer, *, max_reports: int = 20,
                    lease: dt.timedelta = DEFAULT_LEASE, max_attempts: int = MAX_ATTEMPTS,
                    backoff_s: float = DEFAULT_BACKOFF_S) -> ReportRun:
    """Claim and process up to ``max_reports`` due requests, oldest first. A request's own
    failure is recorded on its row and, after the run, raised as :class:`ReportsFailed`; a
    service failure gives the attempt back and stops the run with :class:`ReportServiceDown`
    (both make the run visible as an error in the ledger)."""
    run = ReportRun()
    for _ in range(max_reports):
        # A request that failed in this run waits for its back-off, not the next loop.
        claim = claim_next(session, lease=lease, skip=run.failed)
        if claim is None:
            break
        try:
            file_name = _deliver(session, mailer, claim)
        except Exception as exc:
            session.rollback()
            error = f"{type(exc).__name__}: {exc}"
            if is_service_failure(exc):
                try:
                    refund(session, claim, error)
                except Exception as refund_exc:  # the database itself is down: the lease releases it
                    session.rollback()
                    log.warning("report %s: attempt not given back (%s); its lease will release it", claim.id,
                                type(refund_exc).__name__)
                log.warning("report %s not sent, service unavailable (attempt not charged); stopping: %s",
                            claim.id, exc)
                raise ReportServiceDown(f"report {claim.id}: {error}; emailed before: {run.emailed}") from exc
            status = fail(session, claim, error, max_attempts=max_attempts, backoff_s=backoff_s)
            log.warning("report %s failed (status now %s): %s", claim.id, status, exc)
            run.failed.append(claim.id)
            continue
        if complete(session, claim, file_name):
            run.emailed.append(claim.id)
        else:
            log.warning("report %s: lease lost before completion", claim.id)
            run.lost.append(claim.id)
    if run.failed:
        raise ReportsFailed(f"{len(run.failed)} report(s) failed: {run.failed}; emailed: {run.emailed}")
    return run


def _deliver(session: Session, mailer: Mailer, claim: Claim) -> str:
    """Build the claimed request's report and e-mail it; return the attachment's name."""
    recipient = session.execute(text("SELECT email, name FROM users WHERE id = :u"), {"u": claim.user_id}).one()
    builder = REPORT_BUILDERS.get(claim.report_type)
    if builder is None:
        raise ReportError(f"unknown report type {claim.report_type!r}")
    file_name, content = builder(session, claim.case_id)
    session.commit()
    msg = EmailMessage()
    msg["To"] = recipient.email
    msg["Subject"] = f"Your report #{claim.id} ({claim.report_type})"
    msg.set_content(f"Hello {recipient.name},\n\nYour requested report is attached.\n")
    msg.add_attachment(content, maintype="text", subtype="csv", filename=file_name)
    mailer.send(msg)
    return file_name
