"""Overnight aggregation: per-agency daily statistics, recomputed idempotently.

Each (agency, day) row is computed from the source tables for that day in the agency's
own time zone and written with ``INSERT ... ON CONFLICT DO UPDATE``: running it twice,
or re-running after late data (emails synced late, a case reopened), gives the same row.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_UPSERT = text("""
    INSERT INTO casemgmt.daily_statistics (agency_id, stat_date, cases_opened, cases_closed, open_cases, emails_synced,
                                  emails_matched, notifications_sent, computed_at)
    SELECT g.id, :day,
      (SELECT count(*) FROM casemgmt.cases k WHERE k.agency_id = g.id AND k.deleted_at IS NULL
         AND k.opened_at >= :start AND k.opened_at < :end),
      (SELECT count(*) FROM casemgmt.cases k WHERE k.agency_id = g.id AND k.deleted_at IS NULL
         AND k.closed_at >= :start AND k.closed_at < :end),
      (SELECT count(*) FROM casemgmt.cases k WHERE k.agency_id = g.id AND k.deleted_at IS NULL
         AND k.opened_at < :end AND (k.closed_at IS NULL OR k.closed_at >= :end)),
      (SELECT count(*) FROM casemgmt.emails e JOIN casemgmt.mailboxes b ON b.id = e.mailbox_id
         JOIN casemgmt.admins a ON a.id = b.admin_id
         WHERE a.agency_id = g.id AND e.synced_at >= :start AND e.synced_at < :end),
      (SELECT count(DISTINCT m.email_id) FROM casemgmt.email_matches m JOIN casemgmt.cases k ON k.id = m.case_id
         WHERE k.agency_id = g.id AND m.created_at >= :start AND m.created_at < :end),
      (SELECT count(*) FROM casemgmt.notifications n JOIN casemgmt.admins a ON a.id = n.admin_id
         WHERE a.agency_id = g.id AND n.sent_at >= :start AND n.sent_at < :end),
      now()
    FROM casemgmt.agencies g WHERE g.id = :agency_id
    ON CONFLICT (agency_id, stat_date) DO UPDATE SET
      cases_opened = excluded.cases_opened, cases_closed = excluded.cases_closed,
      open_cases = excluded.open_cases, emails_synced = excluded.emails_synced,
      emails_matched = excluded.emails_matched, notifications_sent = excluded.notifications_sent,
      computed_at = excluded.computed_at
""")


def aggregate_day(session: Session, agency_id: int, tz: str, day: date) -> None:
    """(Re)compute one agency's statistics for one local calendar day."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, datetime.min.time(), zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    session.execute(_UPSERT, {"agency_id": agency_id, "day": day, "start": start, "end": end})


def run_overnight_aggregations(session: Session, now: datetime, *, days_back: int = 2) -> int:
    """Recompute the last ``days_back`` complete local days of every live agency (the
    day before yesterday too, to absorb late syncs); returns rows written."""
    agencies = session.execute(text("SELECT id, timezone FROM casemgmt.agencies WHERE deleted_at IS NULL "
                                    "ORDER BY id")).all()
    written = 0
    for agency_id, tz in agencies:
        today = now.astimezone(ZoneInfo(tz)).date()
        for back in range(1, days_back + 1):
            aggregate_day(session, agency_id, tz, today - timedelta(days=back))
            written += 1
        session.commit()  # one short transaction per agency
    log.info("daily statistics: %s rows for %s agencies", written, len(agencies))
    return written
