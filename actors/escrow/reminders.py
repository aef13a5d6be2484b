"""Case close reminders (daily 06:00 ET) and minimum-balance reminders (every 3 days)."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import text
from sqlalchemy.orm import Session

from actors.escrow.mail import Mailer, deliver_outbox, enqueue_notification
from actors.escrow.models import ADMIN, CASE_MANAGER, ESCROW_SPECIALIST

log = logging.getLogger(__name__)


def send_close_reminders(session: Session, mailer: Mailer | None, *, today: dt.date) -> list[int]:
    """Remind the Escrow Specialists of every case whose scheduled close date is ``today``.

    ``close_reminders`` has one row per (case, date), inserted with ON CONFLICT DO NOTHING
    in the transaction that queues the e-mails: a second run, or a concurrent one, finds
    the row and queues nothing. Returns the cases reminded by this run.
    """
    cases = session.execute(text(
        "SELECT id, number, name FROM cases WHERE status = 'ACTIVE' AND scheduled_close_date = :d ORDER BY id"),
        {"d": today}).all()
    session.commit()
    reminded: list[int] = []
    for case_id, number, name in cases:
        claimed = session.execute(text(
            "INSERT INTO close_reminders (case_id, close_date) VALUES (:c, :d) "
            "ON CONFLICT DO NOTHING RETURNING case_id"),
            {"c": case_id, "d": today}).first()
        if claimed is None:
            session.rollback()
            continue
        specialists = session.execute(text(
            "SELECT u.id, u.email, u.name FROM case_parties p JOIN users u ON u.id = p.user_id "
            "WHERE p.case_id = :c AND p.role = :role AND u.active ORDER BY u.id"),
            {"c": case_id, "role": ESCROW_SPECIALIST}).all()
        for user_id, email, uname in specialists:
            enqueue_notification(
                session, kind="case_close_reminder", dedupe_key=f"close:{case_id}:{today.isoformat()}:{user_id}",
                user_id=user_id, recipient=email, subject=f"Case {number} is scheduled to close today",
                body=f"Hello {uname},\n\nCase {number} ({name}) is scheduled to close on {today.isoformat()}.\n")
        session.commit()
        reminded.append(case_id)
    if mailer is not None:
        deliver_outbox(session, mailer)
    log.info("close reminders for %s: %d cases", today, len(reminded))
    return reminded


def send_balance_reminders(session: Session, mailer: Mailer | None, *, today: dt.date) -> int:
    """Remind the Case Managers of, and every Admin about, each active case below its
    minimum balance. One reminder per (case, user, day); returns the number queued."""
    below = session.execute(text(
        "SELECT id, number, balance, minimum_balance FROM cases "
        "WHERE status = 'ACTIVE' AND balance < minimum_balance ORDER BY id")).all()
    admins = session.execute(text("SELECT id, email, name FROM users WHERE role = :r AND active ORDER BY id"),
                             {"r": ADMIN}).all()
    queued = 0
    for case_id, number, balance, minimum in below:
        managers = session.execute(text(
            "SELECT u.id, u.email, u.name FROM case_parties p JOIN users u ON u.id = p.user_id "
            "WHERE p.case_id = :c AND p.role = :role AND u.active ORDER BY u.id"),
            {"c": case_id, "role": CASE_MANAGER}).all()
        recipients = {r.id: r for r in [*managers, *admins]}
        for user_id, email, uname in recipients.values():
            queued += enqueue_notification(
                session, kind="balance_reminder", dedupe_key=f"balance:{case_id}:{today.isoformat()}:{user_id}",
                user_id=user_id, recipient=email, subject=f"Case {number} is below its minimum balance",
                body=(f"Hello {uname},\n\nCase {number} holds {balance}, below its minimum of {minimum}.\n"))
        session.commit()
    if mailer is not None:
        deliver_outbox(session, mailer)
    log.info("balance reminders for %s: %d queued over %d cases", today, queued, len(below))
    return queued
