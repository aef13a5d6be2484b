"""Tenant provisioning on real PostgreSQL: validated slugs, quoted identifiers, register
first and resume, no silent adoption, unique databases, one-line masked CLI errors, and
bound parameters kept out of tenant-session errors (issue 13, items 5 and 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.conftest import BASE_PG, ROOT, SESSION_TAG, TEST_ENV, admin_execute, drop_database

pytestmark = pytest.mark.integration

PASSWORD = "S3cretPw-7d1e"  # trust authentication ignores it; it must never be printed


def tenancy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "tenants", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)}, timeout=120)


def with_password(name: str, port: int = 5432) -> str:
    return f"postgresql://root:{PASSWORD}@127.0.0.1:{port}/{name}"


def assert_one_masked_line(done: subprocess.CompletedProcess[str], needle: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert PASSWORD not in output, output
    assert "Traceback" not in output, output
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert needle in done.stderr, done.stderr


@pytest.fixture()
def db_names(clean_state: None) -> Iterator[list[str]]:
    names = [f"jpt_{SESSION_TAG}_hard_{i}" for i in range(3)]
    for name in names:
        drop_database(name)
    yield names
    for name in names:
        drop_database(name)


@pytest.mark.parametrize("slug", ["acme_law", "Acme", "1acme", "acme--law", "acme-", "-acme", "ac me", "", "a" * 57,
                                  'x";drop'])
def test_invalid_slugs_are_refused(clean_state: None, slug: str) -> None:
    from jobcore.errors import TenantError
    from tenancy.registry import create_tenant, list_tenants

    with pytest.raises(TenantError, match="invalid tenant slug"):
        create_tenant(slug, "x", "escrow", f"{BASE_PG}/never_created", create_database=False, migrate=False)
    assert list_tenants(active_only=False) == []


def test_database_names_are_injective_and_fit_postgres() -> None:
    from tenancy.registry import MAX_SLUG_LENGTH, database_name

    assert database_name("acme-law") == "tenant_acme_law"
    assert database_name("acme-law") != database_name("acmelaw")
    assert len(database_name("a" * MAX_SLUG_LENGTH).encode()) == 63


def test_database_names_are_quoted_as_identifiers(db_names: list[str]) -> None:
    from tenancy.registry import create_tenant_database

    odd = f'{db_names[0]}_Q"uote; x'
    try:
        assert create_tenant_database(f"{BASE_PG}/{odd}") is True
        admin_execute("SELECT 1")  # the server is fine
        from sqlalchemy import create_engine

        engine = create_engine("postgresql+psycopg2://root@127.0.0.1:5432/postgres")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = :d"), {"d": odd}).scalar() == 1
        engine.dispose()
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{odd.replace(chr(34), chr(34) * 2)}" WITH (FORCE)')


def test_database_urls_are_unique(db_names: list[str]) -> None:
    from jobcore.errors import TenantError
    from tenancy.registry import create_tenant

    url = f"{BASE_PG}/{db_names[0]}"
    create_tenant("first", "First", "escrow", url, create_database=False, migrate=False)
    with pytest.raises(TenantError, match="already registered to tenant 'first'"):
        create_tenant("second", "Second", "escrow", url, create_database=False, migrate=False)
    # The same database spelled with a password and an option is the same database.
    same = f"postgresql://root:{PASSWORD}@127.0.0.1:5432/{db_names[0]}?application_name=x"
    with pytest.raises(TenantError, match="already registered to tenant 'first'") as caught:
        create_tenant("third", "Third", "escrow", same, create_database=False, migrate=False)
    assert PASSWORD not in str(caught.value)
    # The constraint holds even against code that skips the registry's check.
    from sqlalchemy.exc import IntegrityError

    from jobcore.db import control_session
    from tenancy.models import Tenant

    with pytest.raises(IntegrityError), control_session() as session:
        session.add(Tenant(slug="fourth", name="T", product="escrow", database_url=url))
        session.flush()


def test_provisioning_registers_first_refuses_to_adopt_and_resumes(db_names: list[str], broker) -> None:
    """The database exists already: create refuses it (nothing adopted silently), leaves a
    visible provisioning row that no fan-out sees, and --adopt-existing resumes it."""
    from jobcore.errors import TenantError
    from tenancy.fanout import send_for_tenant
    from tenancy.registry import list_tenants
    from tenancy.session import tenant_session

    admin_execute(f'CREATE DATABASE "{db_names[1]}"')
    url = with_password(db_names[1])
    refused = tenancy("create", "acme-law", "--name", "Acme", "--product", "escrow", "--database-url", url)
    assert_one_masked_line(refused, "--adopt-existing")

    (row,) = json.loads(tenancy("list", "--all", "--json").stdout)
    assert (row["slug"], row["status"]) == ("acme-law", "provisioning")
    assert PASSWORD not in row["database"]
    assert list_tenants() == [] and list_tenants(product="escrow") == []
    with pytest.raises(TenantError, match="provisioning"), tenant_session(row["id"]):
        pass
    with pytest.raises(TenantError, match="provisioning"):
        send_for_tenant("EXAMPLE", row["id"])

    resumed = tenancy("create", "acme-law", "--name", "Acme", "--product", "escrow", "--database-url", url,
                      "--adopt-existing")
    assert resumed.returncode == 0, resumed.stderr
    assert PASSWORD not in resumed.stdout + resumed.stderr
    (tenant,) = list_tenants()
    assert (tenant.slug, tenant.status, tenant.id) == ("acme-law", "ready", row["id"])
    with tenant_session(tenant.id) as s:
        assert s.execute(text("SELECT count(*) FROM disbursement_requests")).scalar() == 0


def test_a_failed_creation_is_resumed_on_the_database_it_created(db_names: list[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcore.errors import TenantError
    from tenancy import registry

    url = f"{BASE_PG}/{db_names[2]}"
    migrate = registry.migrate_tenant_database

    def interrupted(database_url: str, product: str) -> None:
        raise RuntimeError(f"migration interrupted on {with_password(db_names[2])}")

    monkeypatch.setattr(registry, "migrate_tenant_database", interrupted)
    with pytest.raises(TenantError, match="not provisioned") as caught:
        registry.create_tenant("half-done", "Half", "escrow", url)
    assert PASSWORD not in str(caught.value)
    (row,) = registry.list_tenants(active_only=False)
    assert row.status == "provisioning" and registry.list_tenants() == []

    # Its own database from the first attempt is no reason to ask for --adopt-existing.
    monkeypatch.setattr(registry, "migrate_tenant_database", migrate)
    done = registry.create_tenant("half-done", "Half", "escrow", url)
    assert done.status == "ready" and done.id == row.id and registry.list_tenants() == [done]


def test_cli_errors_are_one_masked_line(db_names: list[str]) -> None:
    ok = tenancy("create", "dup-one", "--name", "Dup", "--product", "escrow", "--database-url",
                 with_password(db_names[0]))
    assert ok.returncode == 0, ok.stderr
    assert PASSWORD not in ok.stdout + ok.stderr

    duplicate = tenancy("create", "dup-one", "--name", "Again", "--product", "escrow", "--database-url",
                        with_password(db_names[0]))
    assert_one_masked_line(duplicate, "already exists")

    bad_slug = tenancy("create", "Dup_One", "--name", "Bad", "--product", "escrow", "--database-url",
                       with_password(db_names[1]))
    assert_one_masked_line(bad_slug, "invalid tenant slug")

    unreachable = tenancy("create", "far-away", "--name", "Far", "--product", "escrow", "--database-url",
                          with_password(db_names[2], port=1))
    assert_one_masked_line(unreachable, "not provisioned")

    control_down = subprocess.run(
        [sys.executable, "-m", "cli", "tenants", "create", "x", "--name", "X", "--product", "escrow"], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), "DATABASE_URL": with_password("control", port=1)})
    assert_one_masked_line(control_down, "error:")


def test_tenant_session_errors_do_not_carry_bound_parameters(make_tenants) -> None:
    from tenancy.session import tenant_session

    (tenant,) = make_tenants(1)
    secret = "beneficiary-IBAN-DE89370400440532013000"
    with pytest.raises(Exception) as caught, tenant_session(tenant.id) as s:
        s.execute(text("SELECT CAST(:v AS text) FROM no_such_table"), {"v": secret})
    assert "no_such_table" in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(caught.value)
