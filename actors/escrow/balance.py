"""Account balance check (weekly, Sunday 01:00 ET): one alert row per active case below
its minimum balance per check date."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


def check_minimum_balances(session: Session, *, today: dt.date) -> list[int]:
    """Record a ``balance_alerts`` row for each breach; return the cases newly alerted.

    One statement: the unique (case_id, check_date) constraint makes a repeated or
    concurrent run a no-op instead of a duplicate alert."""
    rows = session.execute(text(
        "INSERT INTO balance_alerts (case_id, check_date, balance, minimum_balance) "
        "SELECT id, :d, balance, minimum_balance FROM cases WHERE status = 'ACTIVE' AND balance < minimum_balance "
        "ON CONFLICT (case_id, check_date) DO NOTHING RETURNING case_id"), {"d": today}).scalars().all()
    session.commit()
    log.info("balance check %s: %d new alerts", today, len(rows))
    return sorted(rows)
