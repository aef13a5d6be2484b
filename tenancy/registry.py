"""The tenant registry: create, migrate, list and look up tenants.

Provisioning is register-first (docs/security.md, "Tenant provisioning"): the row is
written in state ``provisioning`` before anything else, then the database is created
and migrated, then the row is marked ``ready``. A failure leaves a visible row with its
``provision_error``; running ``create`` again with the same slug resumes it. Fan-outs,
sessions and on-demand sends only ever see ``ready`` tenants.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from psycopg2 import sql
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from jobcore.db import control_session, direct_url, normalise_url
from jobcore.errors import TenantError
from jobcore.settings import get_settings, mask_url
from tenancy.models import PRODUCTS, PROVISIONING, READY, Tenant

log = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"

DATABASE_PREFIX = "tenant_"
# PostgreSQL truncates identifiers to 63 bytes: tenant_<slug> must fit, or two long slugs
# would silently name one database.
MAX_SLUG_LENGTH = 63 - len(DATABASE_PREFIX)
# Lower-case words joined by single hyphens. No underscore: the database name maps "-"
# to "_", and with underscores excluded from slugs that mapping is injective
# (acme-law -> tenant_acme_law, and acme_law is not a slug). The length is checked
# first and the pattern is unambiguous (each "-" starts a new group), so it runs in
# linear time.
SLUG_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class TenantInfo:
    """What the platform needs of a tenant (a detached, immutable copy of the row)."""

    id: int
    slug: str
    name: str
    product: str
    database_url: str
    active: bool
    status: str = READY
    # Why provisioning failed (one line, secrets masked by describe_error); None when fine.
    provision_error: str | None = None
    # The tenant's own storage as sorted (setting, value) pairs; empty: the platform's.
    storage: tuple[tuple[str, str], ...] = ()

    @property
    def usable(self) -> bool:
        """Active and fully provisioned: the only tenants jobs may run for."""
        return self.active and self.status == READY

    @property
    def has_own_storage(self) -> bool:
        """The tenant has its own S3 bucket (and so its own status check)."""
        return bool(self.storage)


def _info(t: Tenant) -> TenantInfo:
    storage = tuple(sorted((str(k), str(v)) for k, v in (t.storage or {}).items()))
    return TenantInfo(t.id, t.slug, t.name, t.product, t.database_url, t.active, t.status, t.provision_error,
                      storage)


#: Settings a tenant's own storage may set (names of :class:`jobcore.settings.Settings` fields).
STORAGE_KEYS = ("s3_bucket", "s3_endpoint_url", "cloudfront_url", "aws_region")


def set_storage(tenant_id: int, storage: dict[str, str] | None) -> TenantInfo:
    """Give a tenant its own storage (``s3_bucket`` required; ``s3_endpoint_url``,
    ``cloudfront_url``, ``aws_region`` optional), or ``None``: back to the platform's."""
    if storage is not None:
        unknown = sorted(set(storage) - set(STORAGE_KEYS))
        if unknown:
            raise TenantError(f"unknown storage settings {unknown}; expected some of {', '.join(STORAGE_KEYS)}")
        if not str(storage.get("s3_bucket") or "").strip():
            raise TenantError("a tenant's own storage needs an s3_bucket")
        storage = {k: str(v) for k, v in storage.items() if str(v).strip()}
    info = _update(tenant_id, storage=storage)
    with _cache_lock:
        _cache.pop(tenant_id, None)
    return info


def validate_slug(slug: str) -> str:
    """Return ``slug`` if it is a valid tenant slug; raise :class:`TenantError` otherwise."""
    if not slug or len(slug) > MAX_SLUG_LENGTH or SLUG_RE.fullmatch(slug) is None:
        shown = slug[:80] + ("..." if len(slug) > 80 else "")
        raise TenantError(f"invalid tenant slug {shown!r}: use lower-case letters, digits and single hyphens, "
                          f"starting with a letter, at most {MAX_SLUG_LENGTH} characters")
    return slug


def database_name(slug: str) -> str:
    """``tenant_<slug>`` with hyphens as underscores (injective over valid slugs)."""
    return DATABASE_PREFIX + validate_slug(slug).replace("-", "_")


def default_database_url(slug: str) -> str:
    """``tenant_<slug>`` on the control database's server."""
    url = make_url(normalise_url(get_settings().database_url))
    return url.set(database=database_name(slug)).render_as_string(hide_password=False)


def migrate_tenant_database(database_url: str, product: str) -> None:
    """Upgrade one tenant database: the shared base and its product's branch of the
    tenant migration tree (``escrow@head`` or ``casemgmt@head``). The two products have
    separate schemas (both have a ``cases`` table, for instance), so a tenant database
    never gets the other product's branch."""
    if product not in PRODUCTS:
        raise TenantError(f"unknown product {product!r}; expected one of {', '.join(PRODUCTS)}")
    config = Config(str(ALEMBIC_INI))
    # A migration needs a server session (PgBouncer in transaction mode is routed around).
    config.set_main_option("sqlalchemy.url", normalise_url(direct_url(database_url)).replace("%", "%%"))
    command.upgrade(config, f"{product}@head")


def create_tenant_database(database_url: str, *, adopt_existing: bool = False) -> bool:
    """``CREATE DATABASE`` for the URL's database (connecting to ``postgres``); returns
    True if it was created. An existing database is refused unless ``adopt_existing``:
    it may belong to someone else. The name is quoted with ``psycopg2.sql.Identifier``."""
    url = make_url(normalise_url(direct_url(database_url)))
    name = url.database
    if not name:
        raise TenantError(f"database URL {mask_url(database_url)} names no database")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", hide_parameters=True,
                          connect_args={"connect_timeout": 5, "application_name": "jobplatform-tenancy"})
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name}).first()
            if exists:
                if not adopt_existing:
                    raise TenantError(f"database {name!r} already exists on {mask_url(database_url)}; "
                                      "pass --adopt-existing to use it for this tenant")
                return False
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            finally:
                cursor.close()
            return True
    finally:
        admin.dispose()


def set_database_timeouts(database_url: str, statement_timeout_ms: int) -> None:
    """``ALTER DATABASE ... SET`` the statement, lock and idle-in-transaction timeouts that
    connections would otherwise send as startup options: behind PgBouncer
    (``PG_STARTUP_OPTIONS=0``) the database itself must carry them."""
    url = make_url(normalise_url(direct_url(database_url)))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", hide_parameters=True,
                          connect_args={"connect_timeout": 5, "application_name": "jobplatform-tenancy"})
    ms = int(statement_timeout_ms)
    try:
        with admin.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                for name, value in (("statement_timeout", ms), ("lock_timeout", ms),
                                    ("idle_in_transaction_session_timeout", max(ms, 60_000))):
                    cursor.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                        sql.Identifier(url.database or ""), sql.Identifier(name), sql.Literal(value)))
            finally:
                cursor.close()
    finally:
        admin.dispose()


def create_tenant(slug: str, name: str, product: str, database_url: str | None = None, *,
                  create_database: bool = True, migrate: bool = True, adopt_existing: bool = False) -> TenantInfo:
    """Register a tenant (``provisioning``), create its database, migrate it, mark it
    ``ready``; or resume a tenant whose provisioning failed (same slug).

    ``create_database=False`` means the caller provides the database (it is adopted);
    otherwise an existing database is refused unless ``adopt_existing``. Errors are
    :class:`TenantError` with passwords masked."""
    validate_slug(slug)
    if product not in PRODUCTS:
        raise TenantError(f"unknown product {product!r}; expected one of {', '.join(PRODUCTS)}")
    tenant = _register(slug, name, product, database_url)
    try:
        if create_database:
            created = create_tenant_database(tenant.database_url,
                                             adopt_existing=adopt_existing or _owns_database(tenant.id))
            if created:
                _update(tenant.id, owns_database=True)
        if migrate:
            migrate_tenant_database(tenant.database_url, product)
        if create_database and not get_settings().pg_startup_options:
            set_database_timeouts(tenant.database_url, get_settings().tenant_statement_timeout_ms)
    except Exception as exc:
        reason = describe_error(exc)
        _update(tenant.id, provision_error=reason[:2000])
        raise TenantError(f"tenant {slug!r} is registered but not provisioned ({reason}); "
                          "fix the cause and run create again to resume") from None
    info = _update(tenant.id, status=READY, provision_error=None)
    with _cache_lock:
        _cache.pop(info.id, None)
    log.info("Created tenant %s (%s) on %s", slug, product, mask_url(info.database_url))
    return info


def _register(slug: str, name: str, product: str, database_url: str | None) -> TenantInfo:
    """Insert the ``provisioning`` row, or return the row of a provisioning to resume."""
    with control_session() as session:
        existing = session.scalar(select(Tenant).where(Tenant.slug == slug))
        if existing is not None:
            if existing.status == READY:
                raise TenantError(f"tenant {slug!r} already exists (id {existing.id})")
            if existing.product != product or (database_url and database_url != existing.database_url):
                raise TenantError(f"tenant {slug!r} is being provisioned as {existing.product} on "
                                  f"{mask_url(existing.database_url)}; resume it with the same product and URL")
            return _info(existing)
        url = database_url or default_database_url(slug)
        # The unique constraint compares URL strings; the same database can be spelled
        # with other credentials or options, so compare server and database name too.
        target = _database_identity(url)
        for other_slug, other_url in session.execute(select(Tenant.slug, Tenant.database_url)):
            if other_url == url or _database_identity(other_url) == target:
                raise TenantError(f"database {mask_url(url)} is already registered to tenant {other_slug!r}")
        tenant = Tenant(slug=slug, name=name, product=product, database_url=url, active=True, status=PROVISIONING)
        session.add(tenant)
        try:
            session.flush()
        except IntegrityError:
            # A concurrent create took the slug or the URL between our checks and insert.
            raise TenantError(f"tenant {slug!r} or its database {mask_url(url)} was registered concurrently") from None
        return _info(tenant)


def _database_identity(url: str) -> tuple[str, int, str]:
    """(host, port, database) of a PostgreSQL URL, credentials and options ignored."""
    try:
        parsed = make_url(normalise_url(url))
    except Exception:  # not parseable: only the exact string can be compared
        return (url, 0, "")
    return ((parsed.host or "").lower(), parsed.port or 5432, parsed.database or "")


def _owns_database(tenant_id: int) -> bool:
    with control_session() as session:
        return bool(session.scalar(select(Tenant.owns_database).where(Tenant.id == tenant_id)))


def _update(tenant_id: int, **values: object) -> TenantInfo:
    with control_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise TenantError(f"no tenant with id {tenant_id}")
        for key, value in values.items():
            setattr(tenant, key, value)
        session.flush()
        return _info(tenant)


def describe_error(exc: BaseException) -> str:
    """An error as one line without secrets, for operators: SQLAlchemy's appended SQL and
    parameters are dropped (first line of the driver's message only) and any password
    (URL userinfo, ``password=...``) is masked. Platform errors keep their own wording;
    others are prefixed with their type."""
    from jobcore.errors import PlatformError
    from jobcore.redaction import Redactor, get_redactor
    from jobcore.settings import DEFAULT_REDACT_KEYS

    original = getattr(exc, "orig", None) if isinstance(exc, SQLAlchemyError) else None
    cause = original if original is not None else exc
    text_ = str(cause).strip()
    first = text_.splitlines()[0] if text_ else ""
    line = first if isinstance(exc, PlatformError) else f"{type(cause).__name__}: {first}".rstrip(": ")
    try:
        redactor = get_redactor()
    except Exception:  # the settings themselves are broken: still mask, with the defaults
        redactor = Redactor(DEFAULT_REDACT_KEYS)
    return redactor.text(line)


def list_tenants(*, product: str | None = None, active_only: bool = True) -> list[TenantInfo]:
    """Tenants ordered by id, optionally of one product. By default only active, fully
    provisioned (``ready``) tenants: what every fan-out may send to. ``active_only=False``
    lists every row, provisioning ones included (operators' view)."""
    with control_session() as session:
        query = select(Tenant).order_by(Tenant.id)
        if product is not None:
            query = query.where(Tenant.product == product)
        if active_only:
            query = query.where(Tenant.active.is_(True), Tenant.status == READY)
        return [_info(t) for t in session.scalars(query)]


_cache: dict[int, tuple[float, TenantInfo]] = {}
_cache_lock = threading.Lock()
CACHE_TTL_S = 30.0


def get_tenant(tenant_id: int) -> TenantInfo:
    """The tenant (cached for 30 s per process); :class:`TenantError` if unknown. A tenant
    that is still provisioning is not cached, so it is usable as soon as it is ready."""
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
    if info.status == READY:
        with _cache_lock:
            _cache[tenant_id] = (now, info)
    return info


def require_usable(tenant: TenantInfo) -> TenantInfo:
    """``tenant`` if jobs may run for it; :class:`TenantError` saying why not otherwise."""
    if tenant.status != READY:
        raise TenantError(f"tenant {tenant.id} ({tenant.slug}) is still {tenant.status}")
    if not tenant.active:
        raise TenantError(f"tenant {tenant.id} ({tenant.slug}) is inactive")
    return tenant


def set_active(tenant_id: int, active: bool) -> None:
    """Activate or deactivate a tenant (fan-outs skip inactive tenants)."""
    with control_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise TenantError(f"no tenant with id {tenant_id}")
        tenant.active = active
    with _cache_lock:
        _cache.pop(tenant_id, None)
