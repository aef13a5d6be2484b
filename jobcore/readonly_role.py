"""``python -m jobcore.readonly_role``: let Grafana's read-only role log in.

The control migrations create ``LEDGER_READONLY_ROLE`` (default ``jobs_readonly``)
NOLOGIN, with SELECT on the ledger tables and on ``tenants`` without ``database_url``
(revision ``h0004r``). This one-shot step, run as the database owner after the
migrations (compose: the ``ledger-readonly`` service), gives it LOGIN and the password in
``LEDGER_READONLY_PASSWORD``. Run it again to rotate the password. The password is hashed
on this side (libpq's SCRAM verifier) and never printed.
"""

from __future__ import annotations

import sys

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import encrypt_password

from jobcore.db import libpq_dsn
from jobcore.errors import ConfigurationError, PlatformError, ServiceUnavailable
from jobcore.pg import connect_kwargs
from jobcore.settings import Settings, get_settings, mask_url


def enable_login(settings: Settings) -> None:
    """Give the read-only role LOGIN with ``LEDGER_READONLY_PASSWORD``; the role must exist
    (the migrations create it)."""
    role, password = settings.ledger_readonly_role, settings.ledger_readonly_password
    if not password:
        raise ConfigurationError("LEDGER_READONLY_PASSWORD is empty: set the password Grafana logs in with")
    try:
        conn = psycopg2.connect(libpq_dsn(settings.database_url), **connect_kwargs(
            statement_timeout_ms=settings.pg_statement_timeout_ms, connect_timeout_s=settings.pg_connect_timeout_s,
            application_name="jobplatform-readonly-role", options=settings.pg_startup_options))
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(f"cannot reach PostgreSQL at {mask_url(settings.database_url)}: {reason}") from None
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone() is None:
                raise ConfigurationError(f"role {role} does not exist: run the migrations (alembic upgrade head) first")
            # Hashed here (SCRAM, as the server is configured): the clear password never
            # reaches the server, so no statement log can hold it.
            verifier = encrypt_password(password, role, conn)
            cur.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD %s").format(sql.Identifier(role)), (verifier,))
    except psycopg2.Error as exc:
        # The statement is in the error's context, never its parameters; keep the first line.
        raise PlatformError(f"cannot set the password of role {role}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        conn.close()


def main() -> int:
    """Entry point: one line on success or failure, exit status 1 on failure."""
    try:
        settings = get_settings()
        enable_login(settings)
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"role {settings.ledger_readonly_role} can log in with LEDGER_READONLY_PASSWORD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
