"""Scheduled notifications: reminders and upcoming events, sent over SMTP once each.

``notifications`` is an outbox: due reminders and events starting within the horizon
are copied into it (unique per source, so generating twice is a no-op), then each unsent
row is claimed with ``FOR UPDATE SKIP LOCKED``, sent, and marked ``sent_at`` in the same
short transaction. A second run, concurrent or later, finds the row locked or marked and
skips it. The one remaining window (the SMTP server accepted the message, then our commit
failed) is covered by a stable ``Message-ID`` per notification, which lets the
receiving side drop the duplicate.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

from jobcore.errors import ExternalServiceError, InsecureTransport
from jobcore.redaction import get_redactor
from jobcore.settings import Settings, get_settings
from jobcore.smtp import SmtpTransport, open_smtp

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
EVENT_HORIZON = timedelta(hours=24)


class SmtpClient(Protocol):
    """What we need of :class:`smtplib.SMTP`."""

    def send_message(self, msg: EmailMessage) -> Any: ...

    def quit(self) -> Any: ...


SmtpFactory = Callable[[], SmtpClient]


class NotificationSendFailed(ExternalServiceError):
    """Some notifications could not be sent (they stay unsent and are retried)."""


def smtp_from_settings(settings: Settings | None = None) -> SmtpFactory:
    """A factory of SMTP connections configured by ``SMTP_*`` settings."""
    s = settings or get_settings()
    transport = SmtpTransport.from_settings(s)

    def connect() -> SmtpClient:
        if transport.user:
            get_redactor().add_secret(transport.password)
        try:
            return open_smtp(transport)
        except InsecureTransport as exc:
            # An smtplib error, so the send loop records it on the row like any SMTP failure.
            raise smtplib.SMTPException(str(exc)) from None

    return connect


_GENERATE_REMINDERS = text("""
    INSERT INTO casemgmt.notifications (kind, source_id, admin_id, recipient, subject, body, due_at)
    SELECT 'reminder', r.id, a.id, a.email,
           left('Reminder' || coalesce(': ' || k.reference || ' ' || k.title, ''), 300), r.message, r.remind_at
    FROM casemgmt.reminders r
    JOIN casemgmt.admins a ON a.id = r.admin_id AND a.active
    LEFT JOIN casemgmt.cases k ON k.id = r.case_id
    WHERE r.remind_at <= :now AND (k.id IS NULL OR k.deleted_at IS NULL)
    ON CONFLICT (kind, source_id) DO NOTHING
""")

_GENERATE_EVENTS = text("""
    INSERT INTO casemgmt.notifications (kind, source_id, admin_id, recipient, subject, body, due_at)
    SELECT 'upcoming_event', ev.id, a.id, a.email,
           left('Upcoming: ' || ev.title, 300),
           ev.title || ' (case ' || k.reference || ') starts at ' || to_char(ev.starts_at AT TIME ZONE 'UTC',
                                                                         'YYYY-MM-DD HH24:MI') || ' UTC',
           ev.starts_at - :horizon
    FROM casemgmt.case_events ev
    JOIN casemgmt.admins a ON a.id = ev.admin_id AND a.active
    JOIN casemgmt.cases k ON k.id = ev.case_id AND k.deleted_at IS NULL
    WHERE ev.starts_at > :now AND ev.starts_at <= :now + :horizon
    ON CONFLICT (kind, source_id) DO NOTHING
""")

_CLAIM = text("""
    SELECT id, kind, recipient, subject, body FROM casemgmt.notifications
    WHERE sent_at IS NULL AND due_at <= :now AND attempts < :max_attempts AND id > :after
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
""")


@dataclass
class NotificationResult:
    """Counts of one notification run."""

    generated: int = 0
    sent: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def generate_notifications(session: Session, now: datetime) -> int:
    """Copy due reminders and upcoming events into the outbox; returns rows added."""
    n = session.execute(_GENERATE_REMINDERS, {"now": now}).rowcount  # type: ignore[attr-defined]
    n += session.execute(_GENERATE_EVENTS, {"now": now, "horizon": EVENT_HORIZON}).rowcount  # type: ignore[attr-defined]
    session.commit()
    return int(n)


def _email(row: Any, sender: str, domain: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row.recipient
    msg["Subject"] = row.subject
    # Stable per notification: a duplicate after a lost commit is recognisable downstream.
    msg["Message-ID"] = f"<notification-{row.id}.{domain}@casemgmt.invalid>"
    msg.set_content(row.body)
    return msg


def send_due_notifications(session: Session, smtp: SmtpFactory, now: datetime, *, sender: str,
                           tenant_tag: str = "agency") -> NotificationResult:
    """Send every due, unsent notification once; each in its own short transaction."""
    result = NotificationResult()
    client: SmtpClient | None = None
    after = 0
    try:
        while True:
            row = session.execute(_CLAIM, {"now": now, "max_attempts": MAX_ATTEMPTS, "after": after}).first()
            if row is None:
                session.commit()
                break
            after = row.id
            try:
                if client is None:
                    client = smtp()
                client.send_message(_email(row, sender, tenant_tag))
            except (smtplib.SMTPException, OSError) as exc:
                error = get_redactor().text(f"{type(exc).__name__}: {exc}")[:2000]
                session.execute(text("UPDATE casemgmt.notifications SET attempts = attempts + 1, last_error = :e "
                                     "WHERE id = :id"), {"e": error, "id": row.id})
                session.commit()
                result.failed += 1
                log.warning("notification %s not sent: %s", row.id, error)
                client = None  # reconnect for the next one
                continue
            session.execute(text("UPDATE casemgmt.notifications SET sent_at = now(), attempts = attempts + 1, "
                                 "last_error = NULL WHERE id = :id"), {"id": row.id})
            session.commit()
            result.sent += 1
    finally:
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass
    return result


def run_notifications(session: Session, smtp: SmtpFactory, now: datetime, *, sender: str,
                      tenant_tag: str = "agency") -> NotificationResult:
    """Generate then send; raises :class:`NotificationSendFailed` if any send failed."""
    generated = generate_notifications(session, now)
    result = send_due_notifications(session, smtp, now, sender=sender, tenant_tag=tenant_tag)
    result.generated = generated
    if result.failed:
        raise NotificationSendFailed(f"{result.failed} notifications not sent ({result.sent} sent)")
    log.info("notifications: generated %s, sent %s", generated, result.sent)
    return result
