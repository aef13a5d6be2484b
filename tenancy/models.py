"""The tenant registry (control database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, DateTime, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jobcore.models import Base

PRODUCTS = ("escrow", "casemgmt")
# Provisioning states (docs/security.md, "Tenant provisioning"): a tenant is registered
# PROVISIONING first, then its database is created and migrated, then it is READY. Only
# READY (and active) tenants are ever fanned out to or opened.
PROVISIONING = "provisioning"
READY = "ready"
STATUSES = (PROVISIONING, READY)


class Tenant(Base):
    """One agency (case management) or escrow tenant, each with its own database."""

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("product IN ('escrow', 'casemgmt')", name="ck_tenants_product"),
        CheckConstraint("status IN ('provisioning', 'ready')", name="ck_tenants_status"),
        # Two tenants on one database would read each other's data.
        UniqueConstraint("database_url", name="uq_tenants_database_url"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    product: Mapped[str] = mapped_column(String(20))
    # Full URL of the tenant database (PostgreSQL). Credentials, if any, belong in the
    # URL's environment-provided secret, never in logs: use mask_url() to print it.
    database_url: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    status: Mapped[str] = mapped_column(String(16), server_default=READY)
    # Why the last provisioning attempt failed (one line, password masked); NULL once ready.
    provision_error: Mapped[str | None] = mapped_column(Text)
    # True once ``create`` itself created the database: a resumed provisioning may then
    # continue on it without --adopt-existing.
    owns_database: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # The tenant's own storage (S3 bucket, optionally endpoint, region and CloudFront URL);
    # NULL: the platform's (tenancy.registry.set_storage, migration 0005d2).
    storage: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
