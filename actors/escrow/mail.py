"""Outbound e-mail: an SMTP sender built from the SMTP_* settings, and the notification
outbox (rows written in the same transaction as the change they announce, then sent)."""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

from jobcore.errors import ExternalServiceError
from jobcore.settings import Settings, get_settings

log = logging.getLogger(__name__)


class MailError(ExternalServiceError):
    """The SMTP server refused or could not be reached."""


class Mailer(Protocol):
    """Anything that can deliver one message (the SMTP sender in production and tests)."""

    def send(self, message: EmailMessage) -> None: ...


@dataclass
class SmtpSender:
    """Sends each message over one short SMTP session."""

    host: str
    port: int
    sender: str
    user: str = ""
    password: str = ""
    starttls: bool = False
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SmtpSender:
        """The sender configured by SMTP_HOST, SMTP_PORT, SMTP_FROM, SMTP_USER, ..."""
        s = settings or get_settings()
        return cls(host=s.smtp_host, port=s.smtp_port, sender=s.smtp_from, user=s.smtp_user,
                   password=s.smtp_password, starttls=s.smtp_starttls, timeout=s.smtp_timeout)

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` (its From defaults to SMTP_FROM); raise :class:`MailError`."""
        if "From" not in message:
            message["From"] = self.sender
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"SMTP {self.host}:{self.port}: {exc}") from exc


def enqueue_notification(session: Session, *, kind: str, dedupe_key: str, user_id: int | None, recipient: str,
                         subject: str, body: str) -> bool:
    """Add one notification to the outbox unless its ``dedupe_key`` exists; True if added."""
    row = session.execute(text(
        "INSERT INTO notifications (kind, dedupe_key, user_id, recipient, subject, body) "
        "VALUES (:kind, :key, :uid, :rcpt, :subject, :body) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"),
        {"kind": kind, "key": dedupe_key, "uid": user_id, "rcpt": recipient, "subject": subject, "body": body},
    ).first()
    return row is not None


def deliver_outbox(session: Session, mailer: Mailer, *, limit: int = 500, max_attempts: int = 5) -> int:
    """Send pending notifications, one claimed row per transaction, and return how many
    were sent. ``FOR UPDATE SKIP LOCKED`` lets concurrent runs share the outbox without
    sending one row twice; a row is marked SENT in the transaction that holds its lock."""
    sent = 0
    for _ in range(limit):
        row = session.execute(text(
            "SELECT id, recipient, subject, body, attempts FROM notifications WHERE status = 'PENDING' "
            "ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1")).first()
        if row is None:
            session.commit()
            break
        msg = EmailMessage()
        msg["To"] = row.recipient
        msg["Subject"] = row.subject
        msg.set_content(row.body)
        try:
            mailer.send(msg)
        except MailError as exc:
            status = "FAILED" if row.attempts + 1 >= max_attempts else "PENDING"
            session.execute(text("UPDATE notifications SET attempts = attempts + 1, last_error = :e, status = :s "
                                 "WHERE id = :id"), {"e": str(exc), "s": status, "id": row.id})
            session.commit()
            log.warning("notification %s not sent: %s", row.id, exc)
            # The SMTP server is down for everyone: stop; the next run picks the rest up.
            raise
        session.execute(text("UPDATE notifications SET status = 'SENT', sent_at = now(), attempts = attempts + 1 "
                             "WHERE id = :id"), {"id": row.id})
        session.commit()
        sent += 1
    return sent
