"""Outbound e-mail: an SMTP sender built from the SMTP_* settings, and the notification
outbox (rows written in the same transaction as the change they announce, then sent)."""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

from jobcore.errors import ExternalServiceError, InsecureTransport
from jobcore.settings import Settings, get_settings
from jobcore.smtp import SmtpTransport, open_smtp

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
    password: str = field(default="", repr=False)
    # Connection security: see jobcore.smtp (SMTP_TLS, SMTP_CA_FILE, SMTP_ALLOW_PLAINTEXT_AUTH).
    tls: str = "starttls"
    ca_file: str = ""
    allow_plaintext_auth: bool = False
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SmtpSender:
        """The sender configured by SMTP_HOST, SMTP_PORT, SMTP_FROM, SMTP_USER, ..."""
        s = settings or get_settings()
        t = SmtpTransport.from_settings(s)
        return cls(host=t.host, port=t.port, sender=s.smtp_from, user=t.user, password=t.password, tls=t.tls,
                   ca_file=t.ca_file, allow_plaintext_auth=t.allow_plaintext_auth, timeout=t.timeout)

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` (its From defaults to SMTP_FROM); raise :class:`MailError`."""
        if "From" not in message:
            message["From"] = self.sender
        transport = SmtpTransport(self.host, self.port, self.user, self.password, self.tls, self.ca_file,
                                  self.allow_plaintext_auth, self.timeout)
        try:
            with open_smtp(transport) as smtp:
                smtp.send_message(message)
        except InsecureTransport as exc:
            raise MailError(str(exc)) from None
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
