"""The tenant an escrow actor runs for, and its database session."""

from __future__ import annotations

from jobcore.context import current_context
from jobcore.errors import TenantError
from tenancy.session import tenant_session

__all__ = ["current_tenant_id", "tenant_session"]


def current_tenant_id() -> int:
    """The tenant this job runs for; every escrow job is per tenant (sent by the fan-out)."""
    tenant_id = current_context().tenant_id
    if tenant_id is None:
        raise TenantError("escrow jobs run for one tenant: the message has no tenant_id in its job_context")
    return tenant_id
