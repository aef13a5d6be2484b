"""Telling a service outage from a failure of one request.

A job that retries per row must not charge a row's attempts for an SMTP server or a
database that is down for everyone: the row did nothing wrong, and a short outage
would otherwise fail every row it touches for good.
"""

from __future__ import annotations

import smtplib

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

# SMTP failures that concern the server or our account, never one message.
_SMTP_SERVICE = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, smtplib.SMTPHeloError,
                 smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError, smtplib.SMTPSenderRefused)


def _smtp_is_service_failure(exc: smtplib.SMTPException) -> bool:
    if isinstance(exc, _SMTP_SERVICE):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        # Every recipient refused with a 4xx (temporary: "try again later") is the server's state.
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(400 <= int(code) < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= int(exc.smtp_code) < 500  # 4xx: transient server condition (421, 451, 452)
    return False


def is_service_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) means the SMTP server or the
    database could not be reached, dropped the connection, or is temporarily refusing
    service; False for failures specific to the request (bad data, a refused recipient)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        # smtplib's errors are OSErrors too: decide on them before the generic OSError rule.
        if isinstance(cur, smtplib.SMTPException):
            return _smtp_is_service_failure(cur)
        if isinstance(cur, OperationalError | InterfaceError | DisconnectionError | OSError):
            return True
        # Only explicit causes (``raise ... from exc``, as the SMTP sender does): an error
        # that merely happened while handling another is not that error.
        cur = cur.__cause__
    return False
