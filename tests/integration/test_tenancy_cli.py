"""``jobctl tenants create|migrate|list`` as an operator runs them, against real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from jobcore.db import normalise_url
from tests.conftest import BASE_PG, ROOT, SESSION_TAG, TEST_ENV, drop_database

pytestmark = pytest.mark.integration


def tenancy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "tenants", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)}, timeout=120)


def tables(url: str) -> set[str]:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname "
                                         "NOT IN ('pg_catalog', 'information_schema')")).scalars())
    finally:
        engine.dispose()


@pytest.fixture()
def cli_databases(clean_state: None) -> Iterator[dict[str, str]]:
    names = {p: f"jpt_{SESSION_TAG}_cli_{p}" for p in ("escrow", "casemgmt")}
    for name in names.values():
        drop_database(name)
    yield {p: f"{BASE_PG}/{n}" for p, n in names.items()}
    for name in names.values():
        drop_database(name)


def test_create_migrate_and_list_tenants_of_both_products(cli_databases: dict[str, str]) -> None:
    for product, url in cli_databases.items():
        done = tenancy("create", f"{product}-one", "--name", f"One {product}", "--product", product,
                       "--database-url", url)
        assert done.returncode == 0, done.stderr
        assert f"({product}) on {url}" in done.stdout
    # Each database holds the shared base and its own product's branch, not the other's.
    escrow, casemgmt = tables(cli_databases["escrow"]), tables(cli_databases["casemgmt"])
    assert {"public.tenant_meta", "public.alembic_version"} <= escrow & casemgmt
    assert "public.disbursement_requests" in escrow - casemgmt, sorted(escrow)
    assert "casemgmt.agencies" in casemgmt - escrow, sorted(casemgmt)

    listed = json.loads(tenancy("list", "--json").stdout)
    assert [(t["slug"], t["product"], t["active"]) for t in listed] == [
        ("escrow-one", "escrow", True), ("casemgmt-one", "casemgmt", True)]
    assert [t["slug"] for t in json.loads(tenancy("list", "--json", "--product", "casemgmt").stdout)] == [
        "casemgmt-one"]

    migrated = tenancy("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.count("migrated ") == 2

    duplicate = tenancy("create", "escrow-one", "--name", "again", "--product", "escrow", "--database-url",
                        cli_databases["escrow"])
    assert duplicate.returncode != 0


def test_migrate_reports_a_broken_tenant_and_still_migrates_the_others(cli_databases: dict[str, str]) -> None:
    from tenancy.registry import create_tenant

    create_tenant("down", "Down", "escrow", "postgresql://root@127.0.0.1:1/nowhere", create_database=False,
                  migrate=False)
    create_tenant("up", "Up", "escrow", cli_databases["escrow"], create_database=True, migrate=False)
    done = tenancy("migrate")
    assert done.returncode == 1
    assert "FAILED 1 down" in done.stderr and "migrated 2 up" in done.stdout
    assert "public.disbursement_requests" in tables(cli_databases["escrow"])
