"""Worker-level escrow fixtures: a control database under this area's prefix (``h4_``),
and the escrow tenant database registered in the tenant registry, so a real
``dramatiq actors`` worker reaches it through ``tenancy.session.tenant_session``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import tests.conftest as conftest
from tests.conftest import ROOT, SESSION_TAG, _pg_ok, _unavailable, create_database, drop_database
from tests.support.escrow_services import TenantDb


@pytest.fixture(scope="module")
def control_db() -> Iterator[str]:
    """Overrides the shared control database for this module: same migration, a name
    under the ``h4_`` prefix; the previous DATABASE_URL is restored afterwards."""
    if not _pg_ok():
        _unavailable("PostgreSQL")
    from jobcore.db import reset_control_engine
    from jobcore.settings import get_settings

    name = f"h4_ctl_{SESSION_TAG}"
    url = create_database(name)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": url}, capture_output=True)
    saved_env, saved_test_env = os.environ.get("DATABASE_URL"), conftest.TEST_ENV["DATABASE_URL"]
    os.environ["DATABASE_URL"] = conftest.TEST_ENV["DATABASE_URL"] = url
    get_settings.cache_clear()
    reset_control_engine()
    yield url
    reset_control_engine()
    conftest.TEST_ENV["DATABASE_URL"] = saved_test_env
    if saved_env is not None:
        os.environ["DATABASE_URL"] = saved_env
    get_settings.cache_clear()
    drop_database(name)


@pytest.fixture()
def escrow_tenant(broker: Any, tenant: TenantDb) -> Any:
    """The (emptied) escrow tenant database, registered as an active escrow tenant."""
    from tenancy.registry import create_tenant

    return create_tenant(f"escrow-{SESSION_TAG}".replace("_", "-"), "SeedTrust test tenant", "escrow", tenant.url,
                         create_database=False, migrate=False)


def send_for_tenant(actor: Any, tenant_id: int, *args: Any, **options: Any) -> Any:
    """Send ``actor`` for one tenant, as the fan-out does, with extra message options."""
    from jobcore.context import JobContext

    return actor.send_with_options(args=args, job_context=JobContext(tenant_id=tenant_id).to_dict(), **options)
