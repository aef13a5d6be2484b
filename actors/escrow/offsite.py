"""User off-site tracking (every 30 minutes): mark every user off-site and clear the
payment viewing caches (ViewingDR, ViewingPayment)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from actors.escrow.sql import rowcount

log = logging.getLogger(__name__)


@dataclass
class OffsiteResult:
    users_marked: int
    viewing_dr_cleared: int
    viewing_payment_cleared: int


def mark_users_offsite(session: Session) -> OffsiteResult:
    """One transaction: either everything is reset or nothing is. Only rows that change
    are touched, so a repeated run reports zeros."""
    users = rowcount(session.execute(text("UPDATE users SET on_site = false WHERE on_site")))
    drs = rowcount(session.execute(text("DELETE FROM viewing_dr")))
    payments = rowcount(session.execute(text("DELETE FROM viewing_payment")))
    session.commit()
    log.info("off-site: %d users, %d viewing_dr, %d viewing_payment", users, drs, payments)
    return OffsiteResult(users, drs, payments)
