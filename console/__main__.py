"""``python -m console``: serve the console (CONSOLE_HOST:CONSOLE_PORT, default 127.0.0.1:9400).

``python -m console hash-password`` prints the stored form of a password for
CONSOLE_USERS; ``python -m console new-token`` makes an API token for CONSOLE_TOKENS.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
from collections.abc import Sequence


def serve(host: str | None, port: int | None) -> int:
    """Serve the console with waitress until SIGTERM/SIGINT."""
    import waitress

    from console.app import create_app
    from jobcore.errors import PlatformError
    from jobcore.settings import get_settings

    settings = get_settings()
    try:
        app = create_app()
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = host or settings.console_host, port or settings.console_port
    logging.getLogger("console").info("Console listening on http://%s:%s/", host, port)
    # Explicit handlers: a console started in the background by a shell inherits SIGINT
    # ignored, and Ctrl-C (or docker stop's SIGTERM) must still end it within seconds.
    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        waitress.serve(app, host=host, port=port, threads=settings.console_threads, ident="jobs-console",
                       channel_timeout=60, cleanup_interval=30)
    except KeyboardInterrupt:
        logging.getLogger("console").info("Console stopping")
    return 0


def hash_password_cmd(user: str | None, role: str, password_stdin: bool) -> int:
    from console.auth import hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 1
    if len(password) < 12:
        print("error: use at least 12 characters", file=sys.stderr)
        return 1
    stored = hash_password(password)
    print(f"{user}:{role}:{stored}" if user else stored)
    return 0


def new_token_cmd(name: str, role: str) -> int:
    from console.auth import new_token

    token, digest = new_token()
    print(f"token (give it to the client, it is shown once): {token}")
    print(f"CONSOLE_TOKENS entry: {name}:{role}:{digest}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console", description="The job platform's operator console")
    parser.add_argument("--host", help="default: CONSOLE_HOST (127.0.0.1)")
    parser.add_argument("--port", type=int, help="default: CONSOLE_PORT (9400)")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("serve", help="serve the console (the default)")
    p.add_argument("--host", dest="serve_host")
    p.add_argument("--port", dest="serve_port", type=int)
    p = sub.add_parser("hash-password", help="print the stored form of a password (for CONSOLE_USERS)")
    p.add_argument("--user", help="print a whole CONSOLE_USERS entry for this user name")
    p.add_argument("--role", choices=("viewer", "operator"), default="viewer")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = sub.add_parser("new-token", help="make an API token (for CONSOLE_TOKENS)")
    p.add_argument("name")
    p.add_argument("--role", choices=("viewer", "operator"), default="viewer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [PID %(process)d] [%(name)s] "
                        "[%(levelname)s] %(message)s")
    if args.command == "hash-password":
        return hash_password_cmd(args.user, args.role, args.password_stdin)
    if args.command == "new-token":
        return new_token_cmd(args.name, args.role)
    return serve(getattr(args, "serve_host", None) or args.host, getattr(args, "serve_port", None) or args.port)


if __name__ == "__main__":
    sys.exit(main())
