"""The demo's local mail servers, started by ``.ci/up`` (never used in production):

* ``python -m cli.demo_mail smtp --dir run/mail --port 8025``: an SMTP sink on loopback
  (aiosmtpd) that writes every message it receives to ``<dir>/<time>-<n>.eml`` and logs
  one line per message, so the demo's e-mails can be read;
* ``python -m cli.demo_mail imap --dir run/imap --port 1143 --user intake``: Debian's
  dovecot (as ``tests/support/imap_server.py`` runs it) in the foreground, on loopback,
  with one user whose password is kept in ``<dir>/<user>.password``, mail in Maildir
  under ``<dir>``. The process *becomes* dovecot (exec), so a signal to the pid that
  ``.ci/up`` recorded reaches dovecot's master, which stops its children.

Both stop on SIGINT and SIGTERM within a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import secrets
import shutil
import signal
import sys
import threading
import time
from email import message_from_bytes
from pathlib import Path
from typing import Any

log = logging.getLogger("demo_mail")

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

# The configuration tests/support/imap_server.py runs (dovecot 2.3), plain text on
# loopback only: LOGIN without TLS is allowed because nothing leaves the machine.
DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = {host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
first_valid_gid = 0
{service_users}mail_location = maildir:{root}/mail/%u
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
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


def stop_event() -> threading.Event:
    """Set by SIGINT or SIGTERM. Installed explicitly: a process started in the background
    by a shell may inherit SIGINT ignored."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("stopping (%s)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def serve_smtp(directory: Path, host: str, port: int) -> int:
    """Accept every message on ``host:port`` and write it to ``directory``; until a signal."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        print("error: the SMTP sink needs aiosmtpd (pip install -e '.[test]')", file=sys.stderr)
        return 2
    directory.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 1 << 62))

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
            raw = envelope.original_content or envelope.content
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(counter):04d}.eml"
            tmp = directory / f".{name}.tmp"
            tmp.write_bytes(raw)
            tmp.rename(directory / name)  # a reader never sees half a message
            subject = message_from_bytes(raw).get("Subject", "")
            log.info("mail to %s: %s -> %s", ", ".join(envelope.rcpt_tos), subject, directory / name)
            return "250 OK: kept"

    stop = stop_event()
    controller = Controller(Handler(), hostname=host, port=port)
    try:
        controller.start()
    except Exception as exc:  # port taken, bad address: one line, .ci/up shows the log
        print(f"error: SMTP sink cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    log.info("SMTP sink on %s:%d, writing each message to %s/", host, port, directory)
    stop.wait()
    controller.stop()
    log.info("SMTP sink stopped")
    return 0


def _dovecot_ids() -> tuple[int, int]:
    """The uid/gid mail is stored as: dovecot refuses uid 0, so as root its own user."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam("dovecot")
    return entry.pw_uid, entry.pw_gid


def imap_password(root: Path, user: str) -> str:
    """The IMAP user's password, kept in ``<root>/<user>.password`` (made on first use)."""
    root.mkdir(parents=True, exist_ok=True)
    secret_file = root / f"{user}.password"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(16) + "\n")
        secret_file.chmod(0o600)
    return secret_file.read_text().strip()


def prepare_dovecot(root: Path, host: str, port: int, user: str) -> tuple[Path, str]:
    """Write dovecot's configuration and the user's passwd entry under ``root`` (reusing
    the password of an earlier run); return the config path and the password."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # dovecot's unprivileged auth process reads the users directory
    uid, gid = _dovecot_ids()
    for sub in ("run", "state", "mail", "home", "users"):
        (root / sub).mkdir(exist_ok=True)
    (root / "users").chmod(0o755)
    if os.getuid() == 0:
        for sub in ("mail", "home"):
            os.chown(root / sub, uid, gid)
    password = imap_password(root, user)
    passwd = root / "users" / user
    passwd.write_text(f"{user}:{{PLAIN}}{password}::::::\n")
    passwd.chmod(0o644)
    service_users = ""
    if os.getuid() != 0:  # as another user, that user runs the login and auth processes
        name = pwd.getpwuid(os.getuid()).pw_name
        service_users = f"default_internal_user = {name}\ndefault_login_user = {name}\n"
    conf = root / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(root=root, host=host, port=port, uid=uid, gid=gid,
                                        service_users=service_users))
    return conf, password


def serve_imap(root: Path, host: str, port: int, user: str) -> int:
    """Replace this process with dovecot in the foreground (see the module docstring)."""
    if not os.path.exists(DOVECOT):
        print("error: dovecot is not installed (apt-get install dovecot-imapd)", file=sys.stderr)
        return 2
    conf, _ = prepare_dovecot(root.resolve(), host, port, user)
    sys.stdout.flush()
    os.execv(DOVECOT, [DOVECOT, "-F", "-c", str(conf)])
    return 0  # pragma: no cover - execv does not return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.demo_mail", description="The demo's local mail servers")
    sub = parser.add_subparsers(dest="command", required=True)
    smtp = sub.add_parser("smtp", help="an SMTP sink writing each message to a directory")
    smtp.add_argument("--dir", type=Path, required=True)
    smtp.add_argument("--host", default="127.0.0.1")
    smtp.add_argument("--port", type=int, default=8025)
    imap = sub.add_parser("imap", help="dovecot in the foreground with one user")
    imap.add_argument("--dir", type=Path, required=True)
    imap.add_argument("--host", default="127.0.0.1")
    imap.add_argument("--port", type=int, default=1143)
    imap.add_argument("--user", default="intake")
    pw = sub.add_parser("imap-password", help="print the IMAP user's password (creating it if needed)")
    pw.add_argument("--dir", type=Path, required=True)
    pw.add_argument("--user", default="intake")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [PID %(process)d] [%(name)s] "
                        "[%(levelname)s] %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command
    if args.command == "smtp":
        return serve_smtp(args.dir, args.host, args.port)
    if args.command == "imap-password":
        print(imap_password(args.dir, args.user))
        return 0
    return serve_imap(args.dir, args.host, args.port, args.user)


if __name__ == "__main__":
    sys.exit(main())
