"""A per-tenant test actor (workers load it: `dramatiq actors tests.support.tenancy_actors`)."""

from __future__ import annotations

import time

import dramatiq
from sqlalchemy import text

import jobplatform  # noqa: F401 - the platform broker
from jobcore.context import current_context
from tenancy.session import tenant_session


@dramatiq.actor(actor_name="TENANT_PROBE", queue_name="default", max_retries=0)
def tenant_probe(hold_seconds: float = 0.3) -> int:
    """Touch the tenant's database and hold the connection a moment (to overlap tenants)."""
    tenant_id = current_context().tenant_id
    assert tenant_id is not None, "TENANT_PROBE needs a tenant in its JobContext"
    with tenant_session(tenant_id) as session:
        session.execute(text("SELECT count(*) FROM tenant_meta")).scalar_one()
        time.sleep(hold_seconds)
    return tenant_id
