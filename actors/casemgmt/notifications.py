"""Scheduled notifications: reminders and upcoming events, sent over SMTP once each.

``notifications`` is an outbox: due reminders and events starting within the horizon
are copied into it (unique per source, so generating twice is a no-op), then each unsent
row is claimed with ``FOR UPDATE SKIP LOCKED``, sent, and marked ``sent_at`` in the same
short transaction. A second run, concurrent or later, finds the row locked or marked and
skips it. The one remaining window (the SMTP server accepted the message, then our commit
failed) is covered by a stable ``Message-ID`` per notification, which lets the
receiving side drop the duplicate.

Failures are told apart so that an SMTP outage never spends a notification's attempts:

* the SMTP server cannot be reached (connect, TLS, login): nothing is charged, the run
  stops (:class:`NotificationServiceDown`), the next run starts over;
* the server refuses one message (:func:`jobcore.smtp.is_message_refusal`: a recipient,
  its content): that row is charged an attempt and backs off (``next_attempt_at``,
  NOTIFICATION_RETRY_BACKOFF_S doubled per attempt), and the run goes on with the rest;
  after ``MAX_ATTEMPTS`` the row has failed for good (exported, alerted on);
* the connection is lost mid-message (after one reconnect and retry): that row is
  charged and backs off (it may be the cause, and must not block the others for good),
  and the run stops.
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
from jobcore.smtp import SmtpTransport, is_message_refusal, open_smtp

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
EVENT_HORIZON = timedelta(hours=24)
#: The longest a refused notification waits before it is tried again.
MAX_BACKOFF_S = 6 * 3600.0


class SmtpClient(Protocol):
    """What we need of :class:`smtplib.SMTP`."""

    def send_message(self, msg: EmailMessage) -> Any: ...

    def quit(self) -> Any: ...


SmtpFactory = Callable[[], SmtpClient]


class NotificationSendFailed(ExternalServiceError):
    """Some notifications could not be sent (they stay unsent and are retried)."""


class NotificationServiceDown(NotificationSendFailed):
    """The SMTP server could not be reached, or was lost mid-message: the run stopped."""


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
            # An smtplib error, so the send loop treats it like any failure to connect.
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
    SELECT id, kind, recipient, subject, body, attempts FROM casemgmt.notifications
    WHERE sent_at IS NULL AND due_at <= :now AND attempts < :max_attempts AND id > :after
      AND (next_attempt_at IS NULL OR next_attempt_at <= now())
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
""")
_CHARGE = text("""
    UPDATE casemgmt.notifications SET attempts = attempts + 1, last_error = :e,
           next_attempt_at = now() + make_interval(secs => :delay)
    WHERE id = :id
""")
_NOTE = text("UPDATE casemgmt.notifications SET last_error = :e WHERE id = :id")
_SENT = text("UPDATE casemgmt.notifications SET sent_at = now(), attempts = attempts + 1, last_error = NULL, "
             "next_attempt_at = NULL WHERE id = :id")


@dataclass
class NotificationResult:
    """Counts of one notification run."""

    generated: int = 0
    sent: int = 0
    failed: int = 0       # charged: refused (or lost mid-message), backing off
    failed_for_good: int = 0  # of those, on their last attempt

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


def retry_delay_s(base_s: float, attempts: int) -> float:
    """The back-off after the ``attempts``-th charged failure (doubling, capped)."""
    return float(min(MAX_BACKOFF_S, base_s * 2 ** max(0, attempts - 1)))


class _Connection:
    """The run's SMTP connection, opened on first use; ``fresh`` until it carried a message."""

    def __init__(self, factory: SmtpFactory) -> None:
        self.factory = factory
        self.client: SmtpClient | None = None
        self.fresh = True

    def get(self) -> SmtpClient:
        if self.client is None:
            self.client = self.factory()
            self.fresh = True
        return self.client

    def drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass


def _describe(exc: BaseException) -> str:
    return get_redactor().text(f"{type(exc).__name__}: {exc}")[:2000]


def _send(conn: _Connection, msg: EmailMessage) -> None:
    """Send on the run's connection. A failure to connect raises :class:`NotificationServiceDown`;
    a reused connection that fails (the server may have closed it while idle) is replaced
    once and the message retried on the new one; other errors propagate."""
    try:
        client = conn.get()
    except (smtplib.SMTPException, OSError) as exc:
        raise NotificationServiceDown(f"SMTP unavailable: {_describe(exc)}") from exc
    try:
        client.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        if is_message_refusal(exc):
            conn.fresh = False  # the connection carried a transaction: it is known to work
            raise
        if conn.fresh:
            raise
        conn.drop()
        try:
            client = conn.get()
        except (smtplib.SMTPException, OSError) as again:
            raise NotificationServiceDown(f"SMTP unavailable: {_describe(again)}") from again
        client.send_message(msg)
    conn.fresh = False


def send_due_notifications(session: Session, smtp: SmtpFactory, now: datetime, *, sender: str,
                           tenant_tag: str = "agency", backoff_s: float | None = None) -> NotificationResult:
    """Send every due, unsent notification once; each in its own short transaction (see
    the module docstring for what each kind of failure charges). Raises
    :class:`NotificationServiceDown` when the run stopped on the SMTP server."""
    base = get_settings().notification_retry_backoff_s if backoff_s is None else backoff_s
    result = NotificationResult()
    conn = _Connection(smtp)
    after = 0
    try:
        while True:
            row = session.execute(_CLAIM, {"now": now, "max_attempts": MAX_ATTEMPTS, "after": after}).first()
            if row is None:
                session.commit()
                break
            after = row.id
            try:
                _send(conn, _email(row, sender, tenant_tag))
            except NotificationServiceDown as exc:
                # Down for everyone: nothing charged, the reason kept on the row it stopped at.
                session.execute(_NOTE, {"e": str(exc), "id": row.id})
                session.commit()
                log.warning("notifications stopped at %s: %s", row.id, exc)
                raise
            except (smtplib.SMTPException, OSError) as exc:
                error = _describe(exc)
                session.execute(_CHARGE, {"e": error, "id": row.id, "delay": retry_delay_s(base, row.attempts + 1)})
                session.commit()
                result.failed += 1
                result.failed_for_good += row.attempts + 1 >= MAX_ATTEMPTS
                log.warning("notification %s not sent (attempt %d of %d): %s", row.id, row.attempts + 1,
                            MAX_ATTEMPTS, error)
                if is_message_refusal(exc):
                    continue  # the server refused this one message; the connection still works
                conn.drop()
                raise NotificationServiceDown(f"SMTP connection lost at notification {row.id}: {error} "
                                              f"({result.sent} sent)") from exc
            session.execute(_SENT, {"id": row.id})
            session.commit()
            result.sent += 1
    finally:
        conn.drop()
    return result


def run_notifications(session: Session, smtp: SmtpFactory, now: datetime, *, sender: str,
                      tenant_tag: str = "agency") -> NotificationResult:
    """Generate then send. Refused notifications are recorded on their rows (and counted
    in the result) while the run completes; :class:`NotificationServiceDown` (a
    :class:`NotificationSendFailed`) is raised when the SMTP server stopped the run."""
    generated = generate_notifications(session, now)
    result = send_due_notifications(session, smtp, now, sender=sender, tenant_tag=tenant_tag)
    result.generated = generated
    if result.failed:
        log.warning("notifications: %s refused (%s on their last attempt), %s sent", result.failed,
                    result.failed_for_good, result.sent)
    log.info("notifications: generated %s, sent %s", generated, result.sent)
    return result


def requeue_failed_notifications(session: Session, ids: list[int] | None = None) -> int:
    """Operator: give unsent notifications that used up their attempts (all, or ``ids``)
    fresh attempts, once the cause (an address, a mailbox) is fixed; returns how many."""
    n = session.execute(text(
        "UPDATE casemgmt.notifications SET attempts = 0, next_attempt_at = NULL "
        "WHERE sent_at IS NULL AND attempts >= :max "
        "AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[])))"),
        {"max": MAX_ATTEMPTS, "ids": ids}).rowcount  # type: ignore[attr-defined]
    session.commit()
    return int(n)
