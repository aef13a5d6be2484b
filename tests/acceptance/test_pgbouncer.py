"""The control database and the tenant databases through PgBouncer in transaction pooling
mode (Debian's ``pgbouncer`` on loopback), with ``TENANT_POOL_MODE=nullpool`` and
``PG_STARTUP_OPTIONS=0`` (PgBouncer refuses startup options).

What cannot go through transaction pooling is routed to the server itself
(``PG_DIRECT_ADDRESS``): Alembic migrations, CREATE DATABASE, and the Huntington batch
lock (a session-level advisory lock held across transactions). Statement timeouts: the
tenant databases the platform creates get them with ALTER DATABASE; PgBouncer's
``query_timeout`` is the backstop for everything else (docs/scaling.md, "PgBouncer").
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tests.conftest import CONTROL_DB, IN_CI, ROOT, wait_for
from tests.support import tenancy_actors  # noqa: F401 - declares TENANT_PROBE in this process too
from tests.support.ledger import count
from tests.support.pgbouncer import PgBouncer, binary

pytestmark = pytest.mark.acceptance

DIRECT = "127.0.0.1:5432"
POOLED = {"TENANT_POOL_MODE": "nullpool", "PG_STARTUP_OPTIONS": "0", "PG_DIRECT_ADDRESS": DIRECT}


@pytest.fixture()
def pgbouncer(control_db: str) -> Iterator[PgBouncer]:
    if binary() is None:
        if IN_CI:
            pytest.fail("pgbouncer is required in CI (.ci/lib.sh ensure_sentinel_tools)")
        pytest.skip("pgbouncer not installed")
    bouncer = PgBouncer(("127.0.0.1", 5432)).start()
    yield bouncer
    bouncer.stop()


@pytest.fixture()
def pooled_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from jobcore.settings import get_settings

    for key, value in POOLED.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _transactions_by_database(bouncer: PgBouncer) -> dict[str, int]:
    return {row["database"]: int(row["total_xact_count"]) for row in bouncer.show("STATS")}


def test_ledger_lifecycle_through_pgbouncer(pgbouncer: PgBouncer):
    """tests/integration/test_ledger_lifecycle.py, unchanged, in a pytest session whose
    every PostgreSQL URL is the PgBouncer (the control database is created through it and
    migrated directly)."""
    env = {**os.environ, **POOLED, "TEST_PG_URL": pgbouncer.base_url}
    for key in ("DATABASE_URL", "REDIS_NAMESPACE"):
        env.pop(key, None)  # the inner session picks its own
    inner = subprocess.run([sys.executable, "-m", "pytest", "tests/integration/test_ledger_lifecycle.py", "-q", "-x",
                            "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert inner.returncode == 0, inner.stdout[-6000:] + inner.stderr[-3000:]
    assert " passed" in inner.stdout and "skipped" not in inner.stdout, inner.stdout[-2000:]
    inner_dbs = {db: n for db, n in _transactions_by_database(pgbouncer).items()
                 if db.startswith("jpt_") and db != CONTROL_DB}
    assert inner_dbs and max(inner_dbs.values()) > 100, inner_dbs  # the ledger's traffic went through PgBouncer


def test_fan_out_over_50_tenants_through_pgbouncer(pgbouncer: PgBouncer, make_tenants, start_worker):
    from tenancy.fanout import fan_out

    tenants = make_tenants(50, down={17}, base=pgbouncer.base_url)
    processes, threads = 2, 8
    start_worker("tests.support.tenancy_actors", processes=processes, threads=threads,
                 env={**POOLED, "DATABASE_URL": f"{pgbouncer.base_url}/{CONTROL_DB}"})
    tenant_dbs = {t.database_url.rsplit("/", 1)[1] for t in tenants}
    peak_active = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_active
        while not stop.is_set():
            pools = [p for p in pgbouncer.show("POOLS") if p["database"] in tenant_dbs]
            peak_active = max(peak_active, sum(int(p["sv_active"]) for p in pools))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        messages = fan_out("TENANT_PROBE", product="escrow")
        assert len(messages) == 50
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 50, 90,
                 what="50 tenant runs to finish")
    finally:
        stop.set()
        sampler.join()
    assert count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == 49
    assert count("SELECT count(*) FROM job_runs WHERE resolution = 'ERROR' AND tenant_id = :t",
                 t=tenants[17].id) == 1
    served = {db for db, n in _transactions_by_database(pgbouncer).items() if db in tenant_dbs and n > 0}
    assert len(served) == 49  # every reachable tenant's session went through PgBouncer
    assert 0 < peak_active <= processes * threads, peak_active  # one server connection per running job at most
    # nullpool: the workers keep no tenant connection open between jobs.
    idle = wait_for(lambda: all(int(p["cl_active"]) == 0 for p in pgbouncer.show("POOLS")
                                if p["database"] in tenant_dbs) or None, 10, what="tenant clients to close")
    assert idle
    print(f"\nfan-out through PgBouncer: 50 tenants, peak active server connections {peak_active}")


def test_tenant_created_through_pgbouncer_is_migrated_directly_and_carries_its_timeouts(
        pgbouncer: PgBouncer, pooled_settings: None, clean_state: None):
    from tenancy.registry import create_tenant
    from tenancy.session import tenant_session
    from tests.conftest import drop_database

    name = f"tenant_pgb_{os.getpid()}"
    try:
        tenant = create_tenant(f"pgb-{os.getpid()}", "Through PgBouncer", "escrow", f"{pgbouncer.base_url}/{name}")
        with tenant_session(tenant.id) as session:
            assert session.execute(text("SHOW statement_timeout")).scalar_one() == "5min"
            assert session.execute(text("SELECT count(*) FROM tenant_meta")).scalar_one() >= 0
    finally:
        drop_database(name)


def test_batch_lock_holds_its_own_server_session_through_pgbouncer(pgbouncer: PgBouncer, pooled_settings: None):
    """A session-level advisory lock taken through transaction pooling can be released on
    another server connection and stay held for good; the batch lock connects directly."""
    from actors.escrow.huntington import LOCK_NAMESPACE, batch_lock

    engine = create_engine(f"postgresql+psycopg2://root@127.0.0.1:{pgbouncer.port}/{CONTROL_DB}", poolclass=NullPool)
    batch_id = 900_000 + os.getpid() % 1000
    other = psycopg2.connect(f"{pgbouncer.base_url}/{CONTROL_DB}")
    try:
        with Session(engine) as session:
            with batch_lock(session, batch_id, wait=0.5) as work:
                assert work is not None
                work.execute(text("SELECT 1"))
                work.commit()
                # Meanwhile another client's transaction takes the idle server connection.
                other.cursor().execute("SELECT 1")
        held = count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :ns AND objid = :b",
                     ns=LOCK_NAMESPACE, b=batch_id)
        assert held == 0, "the batch lock outlived its run"
    finally:
        other.rollback()
        other.close()
        engine.dispose()
