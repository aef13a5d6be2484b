"""Data-integrity health checks of an agency database.

Each run inserts one ``health_check_runs`` row and one ``health_check_results`` row per
(check, agency): ``status`` is ``pass``, ``fail`` or ``error``, ``failing_count`` the
number of offending rows and ``sample_ids`` up to 20 of their ids. Checks that cannot
be attributed to an agency (a case without one) are stored with ``agency_id`` NULL.
The metrics exporter counts failing checks of the latest run with::

    SELECT r.check_name, r.agency_id, r.failing_count FROM casemgmt.health_check_results r
    WHERE r.run_id = (SELECT max(id) FROM casemgmt.health_check_runs WHERE finished_at IS NOT NULL)
      AND r.status <> 'pass'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from actors.casemgmt.models import HealthCheckResult, HealthCheckRun

log = logging.getLogger(__name__)

SAMPLE = 20
STALE_SYNC = timedelta(hours=24)
OVERDUE_NOTIFICATION = timedelta(hours=1)
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


@dataclass(frozen=True)
class Check:
    """One check: SQL selecting the ids of offending rows (``:agency_id`` when scoped)."""

    name: str
    sql: str
    per_agency: bool = True


CHECKS: tuple[Check, ...] = (
    Check("cases_without_agency", """
        SELECT k.id FROM casemgmt.cases k LEFT JOIN casemgmt.agencies g ON g.id = k.agency_id
        WHERE k.deleted_at IS NULL AND (k.agency_id IS NULL OR g.deleted_at IS NOT NULL)""", per_agency=False),
    Check("contacts_invalid_email", """
        SELECT c.id FROM casemgmt.contacts c JOIN casemgmt.cases k ON k.id = c.case_id
        WHERE k.agency_id = :agency_id AND c.deleted_at IS NULL AND c.email IS NOT NULL
          AND c.email !~* :email_pattern"""),
    Check("emails_matched_to_deleted_cases", """
        SELECT m.email_id FROM casemgmt.email_matches m JOIN casemgmt.cases k ON k.id = m.case_id
        WHERE k.agency_id = :agency_id AND k.deleted_at IS NOT NULL"""),
    Check("stale_mailbox_sync", """
        SELECT b.id FROM casemgmt.mailboxes b JOIN casemgmt.admins a ON a.id = b.admin_id
        WHERE a.agency_id = :agency_id AND b.status = 'connected'
          AND coalesce(b.last_synced_at, b.connected_at) < :now - :stale"""),
    Check("connected_mailbox_without_credentials", """
        SELECT b.id FROM casemgmt.mailboxes b JOIN casemgmt.admins a ON a.id = b.admin_id
        WHERE a.agency_id = :agency_id AND b.status = 'connected' AND b.credential_ciphertext IS NULL"""),
    Check("overdue_unsent_notifications", """
        SELECT n.id FROM casemgmt.notifications n JOIN casemgmt.admins a ON a.id = n.admin_id
        WHERE a.agency_id = :agency_id AND n.sent_at IS NULL AND n.due_at < :now - :overdue"""),
    Check("closed_cases_without_closed_at", """
        SELECT k.id FROM casemgmt.cases k
        WHERE k.agency_id = :agency_id AND k.deleted_at IS NULL
          AND ((k.status = 'closed' AND k.closed_at IS NULL) OR (k.status = 'open' AND k.closed_at IS NOT NULL))"""),
)


def run_health_checks(session: Session, now: datetime, *, job_message_id: str | None = None,
                      checks: tuple[Check, ...] = CHECKS) -> int:
    """Run every check for every live agency; store the results; return the run id.

    A check that errors (e.g. a statement timeout) is stored as ``error`` inside a
    savepoint, so the other checks still run and are stored."""
    run = HealthCheckRun(job_message_id=job_message_id, checks_failed=0)
    session.add(run)
    session.flush()
    agencies = list(session.execute(text("SELECT id FROM casemgmt.agencies WHERE deleted_at IS NULL "
                                         "ORDER BY id")).scalars())
    params: dict[str, Any] = {"now": now, "stale": STALE_SYNC, "overdue": OVERDUE_NOTIFICATION,
                              "email_pattern": EMAIL_PATTERN}
    failed = 0
    for check in checks:
        for agency_id in (agencies if check.per_agency else [None]):
            status, ids, detail = "pass", [], None
            try:
                with session.begin_nested():
                    ids = list(session.execute(text(check.sql), {**params, "agency_id": agency_id}).scalars())
            except SQLAlchemyError as exc:
                status, detail = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0]}"[:2000]
            if ids:
                status = "fail"
            if status != "pass":
                failed += 1
                log.warning("health check %s agency %s: %s (%s rows)", check.name, agency_id, status, len(ids))
            session.add(HealthCheckResult(run_id=run.id, agency_id=agency_id, check_name=check.name, status=status,
                                          failing_count=len(ids), sample_ids=ids[:SAMPLE], detail=detail))
    run.checks_failed = failed
    run.finished_at = now
    session.commit()
    return run.id


# The latest finished run's results per check (the operator console's tenants page).
LATEST_RESULTS = text("""
SELECT r.check_name, count(*) FILTER (WHERE r.status = 'fail') AS failing, count(*) FILTER (WHERE r.status = 'error')
       AS errored, COALESCE(sum(r.failing_count), 0) AS failing_rows, run.id AS run_id, run.finished_at
  FROM casemgmt.health_check_runs run JOIN casemgmt.health_check_results r ON r.run_id = run.id
 WHERE run.id = (SELECT max(id) FROM casemgmt.health_check_runs WHERE finished_at IS NOT NULL)
 GROUP BY r.check_name, run.id, run.finished_at
 ORDER BY r.check_name
""")


def latest_results(conn: Any) -> list[dict[str, Any]]:
    """Per check of the latest finished health-check run: agencies failing or erroring,
    offending rows, and when the run finished (empty if no run finished yet)."""
    return [dict(r) for r in conn.execute(LATEST_RESULTS).mappings()]
