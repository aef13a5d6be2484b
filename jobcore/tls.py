"""TLS client contexts: always verifying (docs/security.md, "TLS").

One place builds them, so no connection in the platform can be opened with
``ssl._create_unverified_context`` or the legacy "no context" defaults of ``imaplib`` and
``smtplib`` (which, without a context, do not check the certificate or the host name).
"""

from __future__ import annotations

import ssl

from jobcore.errors import ConfigurationError


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server's certificate chain and host name,
    against ``ca_file`` when given (a private CA), else the system's trusted CAs."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"CA file {ca_file!r} cannot be loaded: {exc}") from None
