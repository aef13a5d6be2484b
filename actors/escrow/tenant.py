"""Opening the current tenant's database session for an escrow actor."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy.orm import Session

from jobcore.context import current_context
from jobcore.errors import TenantError

SessionFactory = Callable[[int], AbstractContextManager[Session]]

_factory: SessionFactory | None = None


def use_session_factory(factory: SessionFactory | None) -> None:
    """Replace how tenant sessions are opened (None restores the tenancy default).
    Used by test worker processes to point actors at a test database."""
    global _factory
    _factory = factory


def current_tenant_id() -> int:
    """The tenant this job runs for; every escrow job is per tenant."""
    tenant_id = current_context().tenant_id
    if tenant_id is None:
        raise TenantError("escrow jobs run for one tenant: the message has no tenant_id in its job_context")
    return tenant_id


def tenant_session(tenant_id: int) -> AbstractContextManager[Session]:
    """A unit of work on ``tenant_id``'s database (``tenancy.session.tenant_session``)."""
    if _factory is not None:
        return _factory(tenant_id)
    from tenancy.session import tenant_session as open_session  # type: ignore[import-not-found,unused-ignore]

    return open_session(tenant_id)  # type: ignore[no-any-return,unused-ignore]
