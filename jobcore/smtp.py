"""Outbound SMTP connections for both products: TLS mode, certificate verification and
the plain-text credential rule in one place (docs/security.md, "TLS").

Modes: ``starttls`` (connect in clear, upgrade before anything else; a server that does
not offer STARTTLS is an error, never a silent downgrade), ``smtps`` (TLS from the first
byte) and ``none``. SMTP AUTH over ``none`` is refused before the password is sent
unless ``allow_plaintext_auth`` is set explicitly.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass, field
from typing import Self

from jobcore.errors import InsecureTransport
from jobcore.settings import Settings, get_settings
from jobcore.tls import client_context

TLS_MODES = ("starttls", "smtps", "none")


@dataclass(frozen=True)
class SmtpTransport:
    """Where and how to connect (and log in) to the SMTP server."""

    host: str
    port: int
    user: str = ""
    password: str = field(default="", repr=False)
    tls: str = "starttls"
    ca_file: str = ""
    allow_plaintext_auth: bool = False
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Self:
        """The transport configured by SMTP_HOST, SMTP_PORT, SMTP_TLS, SMTP_CA_FILE, ..."""
        s = settings or get_settings()
        return cls(host=s.smtp_host, port=s.smtp_port, user=s.smtp_user, password=s.smtp_password, tls=s.smtp_tls,
                   ca_file=s.smtp_ca_file, allow_plaintext_auth=s.smtp_allow_plaintext_auth, timeout=s.smtp_timeout)


def open_smtp(transport: SmtpTransport) -> smtplib.SMTP:
    """A connected (and, with a user, logged-in) SMTP client. Raises
    :class:`InsecureTransport` before sending a password in clear, and ``OSError`` /
    ``smtplib.SMTPException`` (``ssl.SSLCertVerificationError`` among them) otherwise."""
    if transport.tls not in TLS_MODES:
        raise ValueError(f"SMTP TLS mode must be one of {', '.join(TLS_MODES)}, not {transport.tls!r}")
    if transport.user and transport.tls == "none" and not transport.allow_plaintext_auth:
        # Checked before connecting: nothing is sent at all.
        raise InsecureTransport(f"SMTP AUTH to {transport.host}:{transport.port} over an unencrypted connection "
                                "refused (set SMTP_TLS=starttls or smtps, or SMTP_ALLOW_PLAINTEXT_AUTH=1)")
    client: smtplib.SMTP
    if transport.tls == "smtps":
        client = smtplib.SMTP_SSL(transport.host, transport.port, timeout=transport.timeout,
                                  context=client_context(transport.ca_file))
    else:
        client = smtplib.SMTP(transport.host, transport.port, timeout=transport.timeout)
    try:
        if transport.tls == "starttls":
            # Raises SMTPNotSupportedError when the server does not offer STARTTLS.
            client.starttls(context=client_context(transport.ca_file))
        if transport.user:
            client.login(transport.user, transport.password)
    except BaseException:
        client.close()
        raise
    return client


def is_message_refusal(exc: BaseException) -> bool:
    """True when the server refused this one message (a recipient, its content or size)
    rather than the connection, our account or the sender address: the next message may
    still go through, so an outbox charges this row and goes on.

    Every recipient refused (``SMTPRecipientsRefused``, 4xx or 5xx: a mailbox full or
    unknown is that recipient's state) and a 5xx reply to the message (``SMTPDataError``)
    are refusals. A refused sender, HELO or login concerns every message; a 4xx reply to
    DATA (421, 451) is the server's temporary state; a dropped connection or a time-out
    is the network's."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return True
    if isinstance(exc, smtplib.SMTPSenderRefused | smtplib.SMTPHeloError | smtplib.SMTPAuthenticationError
                  | smtplib.SMTPConnectError):
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= int(exc.smtp_code) < 600
    return False
