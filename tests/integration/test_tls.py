"""TLS is verified (issue 13, item 4): real SMTP (aiosmtpd with STARTTLS, SMTPS, plain) and
IMAP (dovecot with ``ssl = required``) servers on loopback with a certificate from a CA
made in the test. With the CA configured a connection is accepted; without it the
handshake fails and no credentials are sent; credentials in clear are refused unless the
explicit override says so."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from jobcore.errors import ConfigurationError
from jobcore.settings import Settings, get_settings
from tests.support.tls_servers import Certs, make_certs, smtp_server

pytestmark = pytest.mark.integration

USER, PASSWORD = "mailer", "smtp-pw-4f2a"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["To"], msg["Subject"] = "ops@example.test", "tls test"
    msg.set_content("hello")
    return msg


def _sender(port: int, tls: str, ca_file: str = "", **kw: object):  # type: ignore[no-untyped-def]
    from actors.escrow.mail import SmtpSender

    return SmtpSender(host="127.0.0.1", port=port, sender="jobs@example.test", user=USER, password=PASSWORD,
                      tls=tls, ca_file=ca_file, timeout=5, **kw)  # type: ignore[arg-type]


# --- SMTP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_smtp_tls_is_accepted_with_the_ca(certs: Certs, mode: str) -> None:
    with smtp_server(mode, certs, user=USER, password=PASSWORD) as server:
        _sender(server.port, mode, certs.ca_file).send(_message())
    assert server.auth_attempts == [(USER, PASSWORD)] and len(server.messages) == 1


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_smtp_tls_is_refused_without_the_ca_and_no_credentials_are_sent(certs: Certs, mode: str) -> None:
    from actors.escrow.mail import MailError

    with smtp_server(mode, certs, user=USER, password=PASSWORD) as server:
        with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED"):
            _sender(server.port, mode).send(_message())  # system CAs only
    assert server.auth_attempts == [] and server.messages == []


def test_smtp_starttls_never_downgrades_to_plain_text(certs: Certs) -> None:
    from actors.escrow.mail import MailError

    with smtp_server("plain-no-starttls", certs) as server:
        with pytest.raises(MailError, match="STARTTLS"):
            _sender(server.port, "starttls", certs.ca_file).send(_message())
    assert server.auth_attempts == [] and server.messages == []


def test_smtp_plain_text_auth_is_refused_without_the_override_and_accepted_with_it(certs: Certs) -> None:
    from actors.escrow.mail import MailError

    with smtp_server("plain", certs, user=USER, password=PASSWORD) as server:
        with pytest.raises(MailError, match="unencrypted"):
            _sender(server.port, "none").send(_message())
        assert server.auth_attempts == []
        _sender(server.port, "none", allow_plaintext_auth=True).send(_message())
    assert server.auth_attempts == [(USER, PASSWORD)] and len(server.messages) == 1


def test_casemgmt_notifications_use_the_same_transport(certs: Certs) -> None:
    import smtplib

    from actors.casemgmt.notifications import smtp_from_settings

    with smtp_server("starttls", certs, user=USER, password=PASSWORD) as server:
        base = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(server.port), "SMTP_USER": USER,
                "SMTP_PASSWORD": PASSWORD, "SMTP_TLS": "starttls"}
        with pytest.raises(ssl.SSLCertVerificationError):
            smtp_from_settings(Settings.from_env(base))()
        assert server.auth_attempts == []
        client = smtp_from_settings(Settings.from_env({**base, "SMTP_CA_FILE": certs.ca_file}))()
        client.send_message(_message(), from_addr="jobs@example.test")
        client.quit()
        with pytest.raises(smtplib.SMTPException, match="unencrypted"):
            smtp_from_settings(Settings.from_env({**base, "SMTP_TLS": "none"}))()
    assert server.auth_attempts == [(USER, PASSWORD)] and len(server.messages) == 1


@pytest.mark.parametrize("env,needle", [
    ({"SMTP_TLS": "maybe"}, "SMTP_TLS"),
    ({"SMTP_STARTTLS": "0"}, "SMTP_TLS"),  # the old switch is refused, not ignored
])
def test_smtp_tls_settings_are_validated(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        Settings.from_env(env)
    assert Settings.from_env({}).smtp_tls == "starttls"  # verified TLS is the default


# --- IMAP --------------------------------------------------------------------------------------
@pytest.fixture()
def imap_ca(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Sets IMAP_CA_FILE for the provider (read through the process settings)."""
    def configure(path: str | None) -> None:
        if path is None:
            monkeypatch.delenv("IMAP_CA_FILE", raising=False)
        else:
            monkeypatch.setenv("IMAP_CA_FILE", path)
        get_settings.cache_clear()

    yield configure
    monkeypatch.undo()
    get_settings.cache_clear()


def _account(server, user: str, *, use_ssl: bool = False, starttls: bool = False, plain_ok: bool = False):  # type: ignore[no-untyped-def]
    from actors.casemgmt.providers import MailboxAccount

    port = server.ssl_port if use_ssl else server.port
    return MailboxAccount(1, "imap", server.host, port, use_ssl, user, starttls=starttls, allow_plaintext_auth=plain_ok)


@pytest.mark.parametrize("kind", ["implicit", "starttls"])
def test_imap_tls_is_accepted_with_the_ca_and_refused_without(imap_tls_server, imap_ca, kind: str) -> None:
    from actors.casemgmt.errors import MailProviderError
    from actors.casemgmt.imap_provider import ImapProvider

    user, password = imap_tls_server.add_user()
    account = _account(imap_tls_server, user, use_ssl=kind == "implicit", starttls=kind == "starttls")
    imap_ca(imap_tls_server.certs.ca_file)
    with ImapProvider().connect(account, password) as conn:
        assert conn.folder_state().validity > 0

    imap_ca(None)
    log = Path(imap_tls_server.root) / "dovecot.log"
    logins_before = log.read_text(errors="replace").count(f"user=<{user}>")
    with pytest.raises(MailProviderError, match="CERTIFICATE_VERIFY_FAILED"):
        ImapProvider().connect(account, password)
    # The handshake failed before LOGIN: dovecot saw no login for this user.
    assert log.read_text(errors="replace").count(f"user=<{user}>") == logins_before


def test_imap_plain_text_login_is_refused_without_the_override_and_accepted_with_it(imap_server, imap_ca) -> None:
    from actors.casemgmt.errors import MailProviderError
    from actors.casemgmt.imap_provider import ImapProvider

    user, password = imap_server.add_user()
    with pytest.raises(MailProviderError, match="unencrypted connection refused"):
        ImapProvider().connect(_account(imap_server, user), password)
    with ImapProvider().connect(_account(imap_server, user, plain_ok=True), password) as conn:
        assert conn.folder_state().validity > 0


def test_mailbox_rows_carry_the_tls_choice(agency_db, imap_tls_server, imap_ca) -> None:
    """End to end through the tenant schema (migration c0003h): a STARTTLS mailbox syncs."""
    from actors.casemgmt.sync import connect_mailbox, sync_mailbox
    from tests.support.casemgmt_data import seed_agency
    from tests.support.imap_messages import make_message

    imap_ca(imap_tls_server.certs.ca_file)
    session = agency_db()
    seeded = seed_agency(session, admins=1, cases=0)
    user, password = imap_tls_server.add_user()
    imap_tls_server.append(user, make_message("over tls", "client@clients.example", [f"{user}@agency.example"]))
    mailbox = connect_mailbox(session, seeded.admin_ids[0], email_address=f"{user}@agency.example",
                              host=imap_tls_server.host, port=imap_tls_server.port, username=user, secret=password,
                              use_ssl=False, starttls=True)
    session.commit()
    result = sync_mailbox(session, mailbox.id)
    assert result.status == "synced" and result.fetched == 1
