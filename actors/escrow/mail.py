"""Outbound e-mail: an SMTP sender built from the SMTP_* settings, and the notification
outbox (rows written in the same transaction as the change they announce, then sent)."""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass, replace
from email.message import EmailMessage
from typing import Protocol, Self

from sqlalchemy import text
from sqlalchemy.orm import Session

from jobcore.errors import ExternalServiceError, InsecureTransport
from jobcore.settings import Settings, get_settings
from jobcore.smtp import SmtpTransport, is_message_refusal, open_smtp

log = logging.getLogger(__name__)

#: The longest a refused notification waits before it is tried again.
MAX_BACKOFF_S = 6 * 3600.0


class MailError(ExternalServiceError):
    """The SMTP server refused or could not be reached."""

    #: True when the failure came after the connection (and login) succeeded.
    connected: bool = False


class MailUnavailable(MailError):
    """The SMTP server could not be reached, refused our connection, login or sender, or
    was lost after connecting (``connected``): not this message's own fault, unless it
    happened mid-message."""

    def __init__(self, message: str, *, connected: bool = False) -> None:
        super().__init__(message)
        self.connected = connected


class MailRefused(MailError):
    """The server refused this one message (its recipient, content or size,
    :func:`jobcore.smtp.is_message_refusal`): other messages may still go through."""

    connected = True


class Mailer(Protocol):
    """Anything that can deliver one message (the SMTP sender in production and tests)."""

    def send(self, message: EmailMessage) -> None: ...


@dataclass(frozen=True)
class SmtpSender(SmtpTransport):
    """Sends each message over one short SMTP session (the transport: see jobcore.smtp),
    From ``sender`` unless the message has its own."""

    sender: str = "jobs@localhost"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Self:
        """The sender configured by SMTP_HOST, SMTP_PORT, SMTP_FROM, SMTP_USER, ..."""
        s = settings or get_settings()
        return replace(super().from_settings(s), sender=s.smtp_from)

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` (its From defaults to SMTP_FROM). Raises
        :class:`MailUnavailable` when the server cannot be reached (or is lost), and
        :class:`MailRefused` when it refuses this message."""
        if "From" not in message:
            message["From"] = self.sender
        where = f"SMTP {self.host}:{self.port}"
        try:
            smtp = open_smtp(self)
        except InsecureTransport as exc:
            raise MailUnavailable(str(exc)) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise MailUnavailable(f"{where}: {exc}") from exc
        try:
            smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            if is_message_refusal(exc):
                raise MailRefused(f"{where} refused the message: {exc}") from exc
            raise MailUnavailable(f"{where}: {exc}", connected=True) from exc
        finally:
            # The message was accepted (or refused) already: a failing QUIT changes nothing.
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()


def enqueue_notification(session: Session, *, kind: str, dedupe_key: str, user_id: int | None, recipient: str,
                         subject: str, body: str) -> bool:
    """Add one notification to the outbox unless its ``dedupe_key`` exists; True if added."""
    row = session.execute(text(
        "INSERT INTO notifications (kind, dedupe_key, user_id, recipient, subject, body) "
        "VALUES (:kind, :key, :uid, :rcpt, :subject, :body) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"),
        {"kind": kind, "key": dedupe_key, "uid": user_id, "rcpt": recipient, "subject": subject, "body": body},
    ).first()
    return row is not None


@dataclass
class OutboxResult:
    """What one delivery pass did."""

    sent: int = 0
    refused: int = 0   # refused by the server: charged an attempt, backing off (FAILED at the last)
    failed: int = 0    # of those, FAILED for good in this pass (exported, alerted on)


_NEXT_DUE = text(
    "SELECT id, recipient, subject, body, attempts FROM notifications "
    "WHERE status = 'PENDING' AND id > :after AND (next_attempt_at IS NULL OR next_attempt_at <= now()) "
    "ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1")
_CHARGE = text(
    "UPDATE notifications SET attempts = attempts + 1, last_error = :e, status = :s, "
    "next_attempt_at = now() + make_interval(secs => :delay) WHERE id = :id")


def retry_delay_s(base_s: float, attempts: int) -> float:
    """The back-off after the ``attempts``-th charged failure: ``base_s`` doubled per
    attempt, at most :data:`MAX_BACKOFF_S`."""
    return float(min(MAX_BACKOFF_S, base_s * 2 ** max(0, attempts - 1)))


def deliver_outbox(session: Session, mailer: Mailer, *, limit: int | None = None, max_attempts: int = 5,
                   backoff_s: float | None = None) -> OutboxResult:
    """Send every due PENDING notification once in id order (at most ``limit``), one
    claimed row per transaction. ``FOR UPDATE SKIP LOCKED`` lets concurrent runs share the
    outbox without sending one row twice; a row is marked SENT in the transaction that
    holds its lock.

    * A message the server refuses (a recipient, its content) is charged an attempt and
      waits ``backoff_s`` (doubling; NOTIFICATION_RETRY_BACKOFF_S) before it is tried
      again; at ``max_attempts`` it is FAILED. The pass goes on with the next message.
    * A server that cannot be reached charges nothing (the reason is kept on the row) and
      stops the pass: :class:`MailUnavailable` is raised, the rest waits for the next run.
    * A connection lost mid-message charges that message (it may be the cause, and must
      not block the outbox for good) and stops the pass too.
    """
    base = get_settings().notification_retry_backoff_s if backoff_s is None else backoff_s
    result = OutboxResult()
    after = 0
    while limit is None or result.sent + result.refused < limit:
        row = session.execute(_NEXT_DUE, {"after": after}).first()
        if row is None:
            session.commit()
            break
        after = row.id
        msg = EmailMessage()
        msg["To"] = row.recipient
        msg["Subject"] = row.subject
        msg.set_content(row.body)
        try:
            mailer.send(msg)
        except MailError as exc:
            error = str(exc)[:2000]
            if not (isinstance(exc, MailRefused) or exc.connected):
                # The server is down for everyone: nothing charged; the next run goes on.
                session.execute(text("UPDATE notifications SET last_error = :e WHERE id = :id"),
                                {"e": error, "id": row.id})
                session.commit()
                log.warning("outbox stopped at notification %s, SMTP unavailable: %s", row.id, error)
                raise
            failed = row.attempts + 1 >= max_attempts
            session.execute(_CHARGE, {"e": error, "s": "FAILED" if failed else "PENDING", "id": row.id,
                                      "delay": retry_delay_s(base, row.attempts + 1)})
            session.commit()
            result.refused += 1
            result.failed += failed
            log.warning("notification %s not sent (attempt %d of %d%s): %s", row.id, row.attempts + 1,
                        max_attempts, ", FAILED for good" if failed else "", error)
            if not isinstance(exc, MailRefused):
                raise  # lost mid-message: this one is charged, the server may be going down
            continue
        session.execute(text("UPDATE notifications SET status = 'SENT', sent_at = now(), attempts = attempts + 1, "
                             "last_error = NULL WHERE id = :id"), {"id": row.id})
        session.commit()
        result.sent += 1
    return result


def requeue_failed_notifications(session: Session, ids: list[int] | None = None) -> int:
    """Operator: put FAILED notifications (all, or ``ids``) back in the outbox with fresh
    attempts, once their cause (an address, a mailbox) is fixed; returns how many."""
    n = session.execute(text(
        "UPDATE notifications SET status = 'PENDING', attempts = 0, next_attempt_at = NULL "
        "WHERE status = 'FAILED' AND (CAST(:ids AS integer[]) IS NULL OR id = ANY(CAST(:ids AS integer[])))"),
        {"ids": ids}).rowcount  # type: ignore[attr-defined]
    session.commit()
    return int(n)
