"""A real IMAP server for tests: Debian's dovecot-imapd with a generated config.

Dovecot runs in the foreground from a temporary directory, listening on 127.0.0.1 on an
ephemeral port, with users in a passwd-file and Maildir mailboxes under the directory.
Tests seed mail either over IMAP (``append``, the path a real client takes) or, for bulk
volumes, by writing Maildir files directly (``seed_maildir``; dovecot indexes them on the
next SELECT). ``reset_uidvalidity`` removes the user's index and uid list, which makes
dovecot assign a new UIDVALIDITY, as a server-side mailbox rebuild does.

``imap_tls_server`` is a second dovecot with ``ssl = required`` and a certificate from a
throw-away CA (``tests.support.tls_servers``): STARTTLS on ``port``, implicit TLS on
``ssl_port``, no LOGIN without TLS.

The fixtures skip when dovecot is not installed, and fail when ``CI=true``.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.imap_messages import make_message
from tests.support.processes import terminate
from tests.support.tls_servers import Certs, make_certs

__all__ = ["ImapServer", "imap_server", "imap_tls_server", "make_message", "start_dovecot"]

PLAIN = "ssl = no\ndisable_plaintext_auth = no"
TLS = "ssl = required\nssl_cert = <{cert}\nssl_key = <{key}\ndisable_plaintext_auth = yes"

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
auth_mechanisms = plain login
first_valid_uid = 0
{users}first_valid_gid = 0
mail_location = maildir:{root}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    {imaps_ssl}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ImapServer:
    """A running dovecot; ``users`` maps user name to password."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    users: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    mail_uid: int = -1
    mail_gid: int = -1
    ssl_port: int | None = None
    certs: Certs | None = None

    def _own(self, path: Path) -> None:
        if os.getuid() == 0:
            os.chown(path, self.mail_uid, self.mail_gid)

    def add_user(self, user: str | None = None, password: str | None = None) -> tuple[str, str]:
        """Create a user (passwd-file is re-read on each login)."""
        user = user or f"u{uuid.uuid4().hex[:10]}"
        password = password or uuid.uuid4().hex
        self.users[user] = password
        # One passwd-file per user (path has %u): dovecot re-reads a file only when its
        # mtime changes, which a second write within the same second would not do.
        users = self.root / "users" / user
        users.write_text(f"{user}:{{PLAIN}}{password}::::::\n")
        users.chmod(0o644)
        return user, password

    def connect(self, user: str) -> imaplib.IMAP4:
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        if self.certs is not None:  # this server refuses LOGIN before STARTTLS
            conn.starttls(ssl.create_default_context(cafile=self.certs.ca_file))
        conn.login(user, self.users[user])
        return conn

    def append(self, user: str, *messages: bytes) -> None:
        """Deliver messages to the user's INBOX over IMAP APPEND."""
        conn = self.connect(user)
        try:
            for raw in messages:
                typ, data = conn.append("INBOX", None, None, raw)
                assert typ == "OK", data
        finally:
            conn.logout()

    def seed_maildir(self, user: str, messages: Iterator[bytes] | list[bytes]) -> int:
        """Write messages straight into the user's Maildir ``new/`` (bulk seeding)."""
        new = self.root / "mail" / user / "new"
        for path in (self.root / "mail" / user, *(self.root / "mail" / user / s for s in ("new", "cur", "tmp"))):
            path.mkdir(parents=True, exist_ok=True)
            self._own(path)
        n = 0
        for raw in messages:
            n += 1
            target = new / f"{time.time_ns()}.M{n}P{os.getpid()}.seed"
            target.write_bytes(raw)
            self._own(target)
        return n

    def uidvalidity(self, user: str) -> int:
        conn = self.connect(user)
        try:
            conn.select("INBOX", readonly=True)
            _, data = conn.response("UIDVALIDITY")
            return int(data[0])
        finally:
            conn.logout()

    def reset_uidvalidity(self, user: str) -> None:
        """Drop dovecot's uid list and indexes for the user: the next SELECT assigns a new
        UIDVALIDITY and renumbers every message (what a mailbox rebuild on a server does)."""
        box = self.root / "mail" / user
        for path in list(box.iterdir()):
            if path.name.startswith("dovecot"):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        # UIDVALIDITY is a timestamp in dovecot; make sure the new one differs.
        time.sleep(1.1)

    def stop(self) -> None:
        terminate(self.proc)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"IMAP server required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _service_users() -> str:
    """As root, dovecot's own unprivileged users run the login and auth processes (the
    directory is made traversable for them); as any other user, that user runs them."""
    if os.getuid() == 0:
        return ""
    name = pwd.getpwuid(os.getuid()).pw_name
    return f"default_internal_user = {name}\ndefault_login_user = {name}\n"


def start_dovecot(root: Path, tls: Certs | None = None) -> ImapServer:
    """Start dovecot under ``root`` (with TLS required when ``tls`` is given); raise
    RuntimeError if it does not accept connections."""
    root.chmod(0o755)
    # Dovecot refuses uid 0 for mail processes: as root, mail belongs to dovecot's user.
    uid, gid = (os.getuid(), os.getgid())
    if uid == 0:
        entry = pwd.getpwnam("dovecot")
        uid, gid = entry.pw_uid, entry.pw_gid
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        for sub in ("mail", "home"):
            os.chown(root / sub, uid, gid)
    (root / "users").mkdir()
    (root / "users").chmod(0o755)
    port = _free_port()
    ssl_port = _free_port() if tls else 0
    ssl_conf = TLS.format(cert=tls.cert_file, key=tls.key_file) if tls else PLAIN
    conf = root / "dovecot.conf"
    conf.write_text(CONFIG.format(root=root, port=port, uid=uid, gid=gid, users=_service_users(), ssl=ssl_conf,
                                  imaps_port=ssl_port, imaps_ssl="ssl = yes" if tls else ""))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(root / "stderr.log", "wb"), start_new_session=True)
    server = ImapServer(root, port, proc, mail_uid=uid, mail_gid=gid, ssl_port=ssl_port or None, certs=tls)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"* OK"):
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    log = ""
    for name in ("stderr.log", "dovecot.log"):
        if (root / name).exists():
            log += (root / name).read_text(errors="replace")
    raise RuntimeError(f"dovecot did not start on 127.0.0.1:{port}:\n{log}")


@pytest.fixture(scope="session")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    """One dovecot for the test session (each test creates its own users)."""
    yield from _dovecot(None)


@pytest.fixture(scope="session")
def imap_tls_server() -> Iterator[ImapServer]:
    """A dovecot that requires TLS, with a certificate from a CA made for this session."""
    certs_dir = Path(tempfile.mkdtemp(prefix="imap_certs_"))
    certs_dir.chmod(0o755)
    try:
        yield from _dovecot(make_certs(certs_dir))
    finally:
        shutil.rmtree(certs_dir, ignore_errors=True)


def _dovecot(tls: Certs | None) -> Iterator[ImapServer]:
    if not os.path.exists(DOVECOT):
        _unavailable("dovecot is not installed (apt-get install dovecot-imapd)")
    # The port is picked free and then bound by dovecot: another process can take it in
    # between on a busy machine, so try a few fresh ports (each in a fresh directory).
    for attempt in range(5):
        # Not under pytest's 0700 tmp tree: dovecot's auth user must traverse to the users file.
        root = Path(tempfile.mkdtemp(prefix="imap_dovecot_"))
        try:
            server = start_dovecot(root, tls)
            break
        except RuntimeError as exc:
            shutil.rmtree(root, ignore_errors=True)
            if attempt == 4 or "Address already in use" not in str(exc):
                _unavailable(str(exc))
                raise
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
