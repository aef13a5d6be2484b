"""Domain reads in each tenant's database. Escrow: the report queue (and requests
failed for good), Huntington batches/items in a non-final state and FAILED ones, the
latest balance check's findings, overdue DR auto-approvals, refused outbox notifications,
missed close reminders. Case management: the latest health-check run, each connected
mailbox's sync failure streak, refused notifications, emails waiting for matching. Labels
carry ids only."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from jobcore.db import make_engine

log = logging.getLogger(__name__)

# report_requests.status: 1 pending, 2 in progress, 3 emailed, 4 failed (actors.escrow.models).
# Failed-for-good requests stay until an operator requeues them, so they are exported too.
REPORT_OPEN = {1: "pending", 2: "in_progress", 4: "failed"}
# Uses ix_report_requests_queue (status, created_at, id).
REPORT_QUEUE = text("""
    SELECT status, count(*), EXTRACT(EPOCH FROM now() - min(created_at))
      FROM report_requests WHERE status IN (1, 2, 4) GROUP BY status
""")
BATCH_FINAL = ("COMPLETED", "FAILED")
BATCH_NON_FINAL = ("PENDING", "PROCESSING", "NEEDS_RECONCILIATION")
BATCHES_OPEN = text("""
    SELECT status, count(*), EXTRACT(EPOCH FROM now() - min(coalesce(started_at, created_at)))
      FROM huntington_batches WHERE status NOT IN ('COMPLETED', 'FAILED') GROUP BY status
""")
ITEM_NON_FINAL = ("PENDING", "SUBMITTING", "UNKNOWN")
ITEMS_OPEN = text("""
    SELECT status, count(*), EXTRACT(EPOCH FROM now() - min(updated_at))
      FROM huntington_batch_items WHERE status IN ('PENDING', 'SUBMITTING', 'UNKNOWN') GROUP BY status
""")
# FAILED is final for the batch runs, not for the money: a retryable failure was never
# committed at the bank (re-send it), a non-retryable one was rejected (fix, then re-send).
ITEM_FAILED_KINDS = ("not_sent", "rejected")
ITEMS_FAILED = text("""
    SELECT CASE WHEN retryable THEN 'not_sent' ELSE 'rejected' END, count(*),
           EXTRACT(EPOCH FROM now() - min(updated_at))
      FROM huntington_batch_items WHERE status = 'FAILED' GROUP BY 1
""")
BATCHES_FAILED = text("""
    SELECT count(*), EXTRACT(EPOCH FROM now() - min(coalesce(finished_at, created_at)))
      FROM huntington_batches WHERE status = 'FAILED'
""")
# The latest weekly balance check's findings that still hold (a case topped up since, or
# closed, no longer counts).
BALANCE_FINDINGS = text("""
    SELECT count(*) FROM balance_alerts a JOIN cases c ON c.id = a.case_id
     WHERE a.check_date = (SELECT max(check_date) FROM balance_alerts)
       AND c.status = 'ACTIVE' AND c.balance < c.minimum_balance
""")
# Uses ix_dr_pending_due (auto_authorize_at WHERE status = 'PENDING').
DR_OVERDUE = text("""
    SELECT count(*), EXTRACT(EPOCH FROM now() - min(auto_authorize_at))
      FROM disbursement_requests WHERE status = 'PENDING' AND auto_authorize_at <= :cutoff
""")
# The escrow outbox (ix_notifications_pending, ix_notifications_failed): refused at least
# once and still retrying, or refused on every attempt (FAILED, until an operator requeues).
ESCROW_NOTIFICATIONS = text("""
    SELECT CASE WHEN status = 'FAILED' THEN 'failed' ELSE 'retrying' END, count(*)
      FROM notifications WHERE status = 'FAILED' OR (status = 'PENDING' AND attempts > 0) GROUP BY 1
""")
# The agency outbox (ix_notifications_unsent): unsent rows that were charged a failure.
CASEMGMT_NOTIFICATIONS = text("""
    SELECT CASE WHEN attempts >= :max THEN 'failed' ELSE 'retrying' END, count(*)
      FROM casemgmt.notifications WHERE sent_at IS NULL AND attempts > 0 GROUP BY 1
""")
NOTIFICATION_STATES = ("retrying", "failed")
# Active cases closing on the day of the latest close-reminder run (at least the grace old)
# that existed then and have no reminder row for that day: the run did not remind them.
CLOSE_REMINDERS_MISSED = text("""
    SELECT count(*) FROM cases c
     WHERE c.status = 'ACTIVE' AND c.scheduled_close_date = :day AND c.created_at <= :run_at
       AND NOT EXISTS (SELECT 1 FROM close_reminders r WHERE r.case_id = c.id AND r.close_date = :day)
""")
# Synced emails that no matching run has processed yet (ix_emails_unmatched): matching
# marks every email it looks at, matched to a case or not.
UNMATCHED_EMAILS = text("""
    SELECT count(*), EXTRACT(EPOCH FROM now() - min(synced_at)) FROM casemgmt.emails WHERE matched_at IS NULL
""")
MAILBOXES = text("""
    SELECT id, EXTRACT(EPOCH FROM now() - failing_since) FROM casemgmt.mailboxes WHERE status = 'connected'
""")


@dataclass
class DomainSnapshot:
    tenants: list[int] = field(default_factory=list)
    failed_tenants: list[int] = field(default_factory=list)
    reports: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)
    batches: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)
    items: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)
    items_failed: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)  # (tenant, kind)
    batches_failed: dict[int, tuple[int, float]] = field(default_factory=dict)
    below_minimum: dict[int, int] = field(default_factory=dict)
    dr_overdue: dict[int, tuple[int, float]] = field(default_factory=dict)
    casemgmt_tenants: list[int] = field(default_factory=list)
    health: dict[tuple[int, str], int] = field(default_factory=dict)  # (tenant, check) -> failing rows
    # (tenant, mailbox id) -> seconds since its current failure streak began (None: healthy)
    mailboxes: dict[tuple[int, int], float | None] = field(default_factory=dict)
    # (tenant, retrying|failed) -> notifications of each product's outbox
    escrow_notifications: dict[tuple[int, str], int] = field(default_factory=dict)
    casemgmt_notifications: dict[tuple[int, str], int] = field(default_factory=dict)
    close_reminders_missed: dict[int, int] = field(default_factory=dict)
    unmatched_emails: dict[int, tuple[int, float]] = field(default_factory=dict)  # count, oldest age


class TenantEngines:
    """One single-connection engine per tenant database, kept across scrapes. A database
    that failed is not tried again for ``retry_after_s``: each attempt can cost the connect
    timeout, and a few dead tenants must not push the scrape past Prometheus's timeout."""

    def __init__(self, retry_after_s: float = 60.0) -> None:
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.retry_after_s = retry_after_s
        self._failed_until: dict[str, float] = {}

    def usable(self, url: str) -> bool:
        return time.monotonic() >= self._failed_until.get(url, 0.0)

    def failed(self, url: str) -> None:
        self._failed_until[url] = time.monotonic() + self.retry_after_s

    def succeeded(self, url: str) -> None:
        self._failed_until.pop(url, None)

    def get(self, url: str) -> Engine:
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                engine = self._engines[url] = make_engine(url, pool_size=1, application_name="jobs-exporter")
            return engine

    def dispose(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


HEALTH_LATEST = text("""
SELECT r.check_name, COALESCE(sum(r.failing_count) FILTER (WHERE r.status <> 'pass'), 0)
  FROM casemgmt.health_check_results r
 WHERE r.run_id = (SELECT max(id) FROM casemgmt.health_check_runs WHERE finished_at IS NOT NULL)
 GROUP BY r.check_name
""")


def _health_check_names() -> tuple[str, ...]:
    try:
        from actors.casemgmt.health import CHECKS

        return tuple(c.name for c in CHECKS)
    except Exception:  # the exporter still works without the case-management package
        return ()


HEALTH_CHECK_NAMES = _health_check_names()


def _casemgmt_notification_attempts() -> int:
    try:
        from actors.casemgmt.notifications import MAX_ATTEMPTS

        return int(MAX_ATTEMPTS)
    except Exception:  # the exporter still works without the case-management package
        return 5


CASEMGMT_NOTIFICATION_ATTEMPTS = _casemgmt_notification_attempts()


def _read_tenants(product: str, engines: TenantEngines, statement_timeout_ms: int, snap: DomainSnapshot,
                  seen: list[int], read: Callable[[Any, int], None]) -> None:
    """Run ``read(connection, tenant_id)`` on every active tenant of ``product``. A tenant
    database that fails is counted in ``failed_tenants`` (and skipped for a while), never
    allowed to hide the others."""
    from tenancy.registry import list_tenants

    for tenant in list_tenants(product=product):
        seen.append(tenant.id)
        if not engines.usable(tenant.database_url):
            snap.failed_tenants.append(tenant.id)
            continue
        try:
            with engines.get(tenant.database_url).connect() as conn:
                # LOCAL: the connection's (implicit) transaction only; a session-level SET
                # would stay on a PgBouncer server connection for its next clients.
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
                read(conn, tenant.id)
            engines.succeeded(tenant.database_url)
        except Exception as exc:
            log.warning("Tenant %s: domain metrics unavailable: %s", tenant.id, type(exc).__name__)
            snap.failed_tenants.append(tenant.id)
            engines.failed(tenant.database_url)


def schedule_cutoff(schedule_name: str, now: dt.datetime, grace_s: float) -> dt.datetime:
    """The nominal time of the latest run of the (daily) schedule that is at least
    ``grace_s`` old: work already due then should have been done by it. Without the
    schedule, ``now - grace_s``."""
    latest = now - dt.timedelta(seconds=grace_s)
    try:
        from periodic.schedules import by_name

        fires = by_name(schedule_name).cadence.fire_times_between(latest - dt.timedelta(days=2), latest)
    except Exception:
        log.exception("%s schedule unavailable; counted from %s", schedule_name, latest)
        return latest
    return fires[-1] if fires else latest


def dr_overdue_cutoff(now: dt.datetime, grace_s: float) -> dt.datetime:
    """The nominal time of the latest scheduled DR auto-approval run that is at least
    ``grace_s`` old: a request already due then should have been approved by it. (The run
    is daily: counting every request due for 2 h would page each day for requests that
    became due after 06:00.)"""
    return schedule_cutoff("dr_auto_approval", now, grace_s)


def close_reminder_day(now: dt.datetime, grace_s: float) -> tuple[dt.date, dt.datetime]:
    """(the ET day, the nominal time) of the latest close-reminder run at least ``grace_s``
    old: the active cases closing that day should have a reminder row by now."""
    from zoneinfo import ZoneInfo

    run_at = schedule_cutoff("case_close_reminders", now, grace_s)
    return run_at.astimezone(ZoneInfo("America/New_York")).date(), run_at


def read_domain(engines: TenantEngines, statement_timeout_ms: int, *, dr_grace_s: float = 7200.0
                ) -> DomainSnapshot:
    """Report queue, Huntington, balance-check and DR auto-approval state of every active
    escrow tenant; failing data-integrity checks and mailboxes of every active agency."""
    snap = DomainSnapshot()
    now = dt.datetime.now(dt.UTC)
    cutoff = dr_overdue_cutoff(now, dr_grace_s)
    close_day, close_run_at = close_reminder_day(now, dr_grace_s)

    def escrow(conn: Any, tenant_id: int) -> None:
        for status, n, age in conn.execute(REPORT_QUEUE):
            snap.reports[(tenant_id, REPORT_OPEN[int(status)])] = (int(n), float(age or 0))
        for status, n, age in conn.execute(BATCHES_OPEN):
            snap.batches[(tenant_id, status)] = (int(n), float(age or 0))
        for status, n, age in conn.execute(ITEMS_OPEN):
            snap.items[(tenant_id, status)] = (int(n), float(age or 0))
        for kind, n, age in conn.execute(ITEMS_FAILED):
            snap.items_failed[(tenant_id, str(kind))] = (int(n), float(age or 0))
        n, age = conn.execute(BATCHES_FAILED).one()
        snap.batches_failed[tenant_id] = (int(n), float(age or 0))
        snap.below_minimum[tenant_id] = int(conn.execute(BALANCE_FINDINGS).scalar_one())
        n, age = conn.execute(DR_OVERDUE, {"cutoff": cutoff}).one()
        snap.dr_overdue[tenant_id] = (int(n), float(age or 0))
        for state, n in conn.execute(ESCROW_NOTIFICATIONS):
            snap.escrow_notifications[(tenant_id, str(state))] = int(n)
        snap.close_reminders_missed[tenant_id] = int(conn.execute(
            CLOSE_REMINDERS_MISSED, {"day": close_day, "run_at": close_run_at}).scalar_one())

    def casemgmt(conn: Any, tenant_id: int) -> None:
        for check, failing in conn.execute(HEALTH_LATEST):
            snap.health[(tenant_id, str(check))] = int(failing)
        for mailbox_id, failing_s in conn.execute(MAILBOXES):
            snap.mailboxes[(tenant_id, int(mailbox_id))] = None if failing_s is None else float(failing_s)
        for state, n in conn.execute(CASEMGMT_NOTIFICATIONS, {"max": CASEMGMT_NOTIFICATION_ATTEMPTS}):
            snap.casemgmt_notifications[(tenant_id, str(state))] = int(n)
        n, age = conn.execute(UNMATCHED_EMAILS).one()
        snap.unmatched_emails[tenant_id] = (int(n), float(age or 0))

    _read_tenants("escrow", engines, statement_timeout_ms, snap, snap.tenants, escrow)
    _read_tenants("casemgmt", engines, statement_timeout_ms, snap, snap.casemgmt_tenants, casemgmt)
    return snap
