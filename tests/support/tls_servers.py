"""TLS test material and servers: a throw-away CA with a server certificate for 127.0.0.1 and
localhost (made with ``cryptography``), and aiosmtpd SMTP servers speaking STARTTLS,
implicit TLS (SMTPS) or plain SMTP, recording every AUTH attempt they receive."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.escrow_services import free_port


@dataclass(frozen=True)
class Certs:
    """PEM files: the CA certificate (what a client trusts) and the server's chain and key."""

    ca_file: str
    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certs(directory: Path) -> Certs:
    """A CA and a server certificate signed by it, valid for 127.0.0.1 and localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("jobplatform test CA")).issuer_name(_name("jobplatform test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    for name in ("ca.pem", "server.pem", "server.key"):
        (directory / name).chmod(0o644)  # dovecot reads them as root; aiosmtpd in-process
    return Certs(str(directory / "ca.pem"), str(directory / "server.pem"), str(directory / "server.key"))


@dataclass
class SmtpTlsServer:
    """A running aiosmtpd server: what it received and every AUTH attempt (login, password)."""

    host: str
    port: int
    mode: str
    messages: list[Any] = field(default_factory=list)
    auth_attempts: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def smtp_server(mode: str, certs: Certs, *, user: str = "mailer", password: str = "smtp-pw") -> Iterator[SmtpTlsServer]:
    """``mode``: "starttls" (STARTTLS offered and required before AUTH), "smtps" (TLS from
    the first byte), "plain" (no TLS; AUTH accepted in clear, for the override test) or
    "plain-no-starttls" (no TLS at all, to show a client never downgrades)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    server = SmtpTlsServer("127.0.0.1", free_port(), mode)

    def authenticator(_server: Any, _session: Any, _envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else str(auth_data.login)
        secret = auth_data.password.decode() if isinstance(auth_data.password, bytes) else str(auth_data.password)
        with server.lock:
            server.auth_attempts.append((login, secret))
        return AuthResult(success=(login, secret) == (user, password))

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
            with server.lock:
                server.messages.append(envelope.content)
            return "250 OK"

    kwargs: dict[str, Any] = {"authenticator": authenticator, "auth_required": True}
    if mode == "starttls":
        kwargs.update(tls_context=certs.server_context(), require_starttls=True, auth_require_tls=True)
    elif mode == "smtps":
        kwargs.update(auth_require_tls=False)
    elif mode == "plain":
        kwargs.update(auth_require_tls=False)
    else:  # plain-no-starttls: no AUTH either, just no TLS on offer
        kwargs = {}
    if mode == "smtps":
        controller = Controller(Handler(), hostname=server.host, port=server.port,
                                ssl_context=certs.server_context(), **kwargs)
    else:
        controller = Controller(Handler(), hostname=server.host, port=server.port, **kwargs)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
