"""RFC 5322 test messages for the IMAP server fixture."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid


def make_message(subject: str, sender: str, to: list[str], *, message_id: str | None = None,
                 in_reply_to: str | None = None, references: list[str] | None = None,
                 body: str = "hello", date: datetime | None = None) -> bytes:
    """An RFC 5322 message as bytes."""
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="test.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg.set_content(body)
    return bytes(msg)
