"""The tenant registry (control database)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from jobcore.models import Base

PRODUCTS = ("escrow", "casemgmt")


class Tenant(Base):
    """One agency (case management) or escrow tenant, each with its own database."""

    __tablename__ = "tenants"
    __table_args__ = (CheckConstraint("product IN ('escrow', 'casemgmt')", name="ck_tenants_product"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    product: Mapped[str] = mapped_column(String(20))
    # Full URL of the tenant database (PostgreSQL). Credentials, if any, belong in the
    # URL's environment-provided secret, never in logs: use mask_url() to print it.
    database_url: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
