"""The tenant registry: create, migrate, list and look up tenants."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from jobcore.db import control_session, normalise_url
from jobcore.errors import TenantError
from jobcore.settings import get_settings, mask_url
from tenancy.models import PRODUCTS, Tenant

log = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"


@dataclass(frozen=True)
class TenantInfo:
    """What the platform needs of a tenant (a detached, immutable copy of the row)."""

    id: int
    slug: str
    name: str
    product: str
    database_url: str
    active: bool


def _info(t: Tenant) -> TenantInfo:
    return TenantInfo(t.id, t.slug, t.name, t.product, t.database_url, t.active)


def default_database_url(slug: str) -> str:
    """``tenant_<slug>`` on the control database's server."""
    url = make_url(normalise_url(get_settings().database_url))
    return url.set(database=f"tenant_{slug.replace('-', '_')}").render_as_string(hide_password=False)


def migrate_tenant_database(database_url: str, product: str) -> None:
    """Upgrade one tenant database: the shared base and its product's branch of the
    tenant migration tree (``escrow@head`` or ``casemgmt@head``). The two products have
    separate schemas (both have a ``cases`` table, for instance), so a tenant database
    never gets the other product's branch."""
    if product not in PRODUCTS:
        raise TenantError(f"unknown product {product!r}; expected one of {', '.join(PRODUCTS)}")
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", normalise_url(database_url).replace("%", "%%"))
    command.upgrade(config, f"{product}@head")


def create_database_if_missing(database_url: str) -> None:
    """``CREATE DATABASE`` for the URL's database unless it exists (connects to ``postgres``)."""
    url = make_url(normalise_url(database_url))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": url.database}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        admin.dispose()


def create_tenant(slug: str, name: str, product: str, database_url: str | None = None, *,
                  create_database: bool = True, migrate: bool = True) -> TenantInfo:
    """Register a tenant, create its database if needed and migrate it."""
    if product not in PRODUCTS:
        raise TenantError(f"unknown product {product!r}; expected one of {', '.join(PRODUCTS)}")
    url = database_url or default_database_url(slug)
    if create_database:
        create_database_if_missing(url)
    if migrate:
        migrate_tenant_database(url, product)
    with control_session() as session:
        tenant = Tenant(slug=slug, name=name, product=product, database_url=url, active=True)
        session.add(tenant)
        session.flush()
        info = _info(tenant)
    log.info("Created tenant %s (%s) on %s", slug, product, mask_url(url))
    return info


def list_tenants(*, product: str | None = None, active_only: bool = True) -> list[TenantInfo]:
    """Tenants ordered by id, optionally of one product; only active ones unless told."""
    with control_session() as session:
        query = select(Tenant).order_by(Tenant.id)
        if product is not None:
            query = query.where(Tenant.product == product)
        if active_only:
            query = query.where(Tenant.active.is_(True))
        return [_info(t) for t in session.scalars(query)]


_cache: dict[int, tuple[float, TenantInfo]] = {}
_cache_lock = threading.Lock()
CACHE_TTL_S = 30.0


def get_tenant(tenant_id: int) -> TenantInfo:
    """The tenant (cached for 30 s per process); :class:`TenantError` if unknown."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(tenant_id)
        if hit and now - hit[0] < CACHE_TTL_S:
            return hit[1]
    with control_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise TenantError(f"no tenant with id {tenant_id}")
        info = _info(tenant)
    with _cache_lock:
        _cache[tenant_id] = (now, info)
    return info


def set_active(tenant_id: int, active: bool) -> None:
    """Activate or deactivate a tenant (fan-outs skip inactive tenants)."""
    with control_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise TenantError(f"no tenant with id {tenant_id}")
        tenant.active = active
    with _cache_lock:
        _cache.pop(tenant_id, None)
