"""Every operational error of jobctl is one line on stderr that says what to do: no
traceback, exit status 1, passwords masked (issue 15). Real PostgreSQL and Redis; the
unreachable ones are loopback ports nothing listens on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import BASE_PG, ROOT, SESSION_TAG, TEST_ENV, create_database, drop_database

pytestmark = pytest.mark.integration

SECRET = "s3cret-Pw"
# PostgreSQL trusts loopback here, so a password in the URL is accepted and ignored: the
# commands reach the database, and the password must never be printed.
PG_WITH_PASSWORD = BASE_PG.replace("://root@", f"://root:{SECRET}@")
MASKED = "://root:***@"


def jobctl(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), **env}, timeout=60)


def assert_one_line(out: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 1, exactly one line on stderr, no traceback, no password; returns the line."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert SECRET not in out.stderr + out.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def scratch_db(control_db: str) -> Iterator[str]:
    """An empty database (never migrated); its name."""
    name = f"jpt_{SESSION_TAG}_clierr"
    create_database(name)
    yield name
    drop_database(name)


CONTROL_COMMANDS = [("runs",), ("schedules",), ("tenants", "list"), ("tenants", "create", "acme", "--name", "Acme",
                                                                      "--product", "escrow"),
                    ("run", "1"), ("prune",)]


def test_unmigrated_control_database(scratch_db: str, redis_url: str) -> None:
    url = f"{PG_WITH_PASSWORD}/{scratch_db}"
    for args in CONTROL_COMMANDS:
        assert_one_line(jobctl(*args, DATABASE_URL=url),
                        f"the control database postgresql{MASKED}", f"/{scratch_db} has no ledger tables",
                        "run `alembic upgrade head`")


def test_control_database_behind_the_code(scratch_db: str, redis_url: str) -> None:
    # A checkout pulled after its database was migrated: one revision short of head.
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "0004d2"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "DATABASE_URL": f"{BASE_PG}/{scratch_db}"})
    out = jobctl("tenants", "list", DATABASE_URL=f"{PG_WITH_PASSWORD}/{scratch_db}")
    assert_one_line(out, f"the control database postgresql{MASKED}", "is behind this code",
                    "run `alembic upgrade head`")


def test_missing_control_database(control_db: str) -> None:
    name = f"jpt_{SESSION_TAG}_nosuchdb"
    for args in (("runs",), ("tenants", "list")):
        assert_one_line(jobctl(*args, DATABASE_URL=f"{PG_WITH_PASSWORD}/{name}"),
                        f"the control database postgresql{MASKED}", f"/{name} does not exist",
                        f"createdb {name}", "alembic upgrade head")


def test_duplicate_tenant_slug_and_database(clean_state: None) -> None:
    name = f"jpt_{SESSION_TAG}_clidup"
    drop_database(name)
    try:
        created = jobctl("tenants", "create", "dup-co", "--name", "Dup", "--product", "escrow",
                         "--database-url", f"{BASE_PG}/{name}")
        assert created.returncode == 0, created.stderr
        again = jobctl("tenants", "create", "dup-co", "--name", "Dup", "--product", "escrow")
        assert_one_line(again, "tenant 'dup-co' already exists (id 1)")
        same_db = jobctl("tenants", "create", "other-co", "--name", "Other", "--product", "escrow",
                         "--database-url", f"{PG_WITH_PASSWORD}/{name}")
        assert_one_line(same_db, f"/{name} is already registered to tenant 'dup-co'")
    finally:
        drop_database(name)


def test_unreachable_postgresql(redis_url: str) -> None:
    url = f"postgresql://root:{SECRET}@127.0.0.1:{free_port()}/control"
    for args in CONTROL_COMMANDS:
        assert_one_line(jobctl(*args, DATABASE_URL=url), f"cannot reach PostgreSQL at postgresql{MASKED}127.0.0.1:",
                        "Connection refused")


def test_unreachable_redis(clean_state: None) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    for args in (("runs",), ("queues",), ("dead-letters",), ("revoke", "0123-not-a-message"), ("reconcile",),
                 ("schedules",)):
        assert_one_line(jobctl(*args, REDIS_URL=url), "cannot reach Redis at redis://:***@127.0.0.1:",
                        "Connection refused")


def test_a_bad_setting_names_the_variable(redis_url: str) -> None:
    assert_one_line(jobctl("runs", MAX_RETRIES="many"), "MAX_RETRIES: invalid literal for int()")
