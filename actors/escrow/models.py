"""Typed SQLAlchemy models of the escrow tenant schema (migrations ``e0001`` .. ``e0003d``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Boolean, Date, DateTime, ForeignKey, Integer, Numeric, SmallInteger, String, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Per-case roles (also the platform-wide role of a user).
IP = "IP"
IP_REP = "IP_REP"
CASE_MANAGER = "CASE_MANAGER"
ESCROW_SPECIALIST = "ESCROW_SPECIALIST"
ADMIN = "ADMIN"

# report_requests.status (the seed's queue, plus a terminal failure).
REPORT_PENDING, REPORT_IN_PROGRESS, REPORT_EMAILED, REPORT_FAILED = 1, 2, 3, 4


class EscrowBase(DeclarativeBase):
    """Declarative base of the tenant schema (separate from the control database's)."""


class User(EscrowBase):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(30))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    on_site: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Case(EscrowBase):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="ACTIVE")
    balance: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    minimum_balance: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    scheduled_close_date: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class CaseParty(EscrowBase):
    __tablename__ = "case_parties"
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(30), primary_key=True)


class DisbursementRequest(EscrowBase):
    __tablename__ = "disbursement_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    requested_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    payee: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    status: Mapped[str] = mapped_column(String(20), default="PENDING")
    auto_authorize_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1)
    approved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    approved_by: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class Notification(EscrowBase):
    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="PENDING")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Back-off after a refusal (migration e0004d2).
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CloseReminder(EscrowBase):
    __tablename__ = "close_reminders"
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    close_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class BalanceAlert(EscrowBase):
    __tablename__ = "balance_alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    check_date: Mapped[dt.date] = mapped_column(Date)
    balance: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    minimum_balance: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class ReportRequest(EscrowBase):
    __tablename__ = "report_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    report_type: Mapped[str] = mapped_column(String(40))
    status: Mapped[int] = mapped_column(SmallInteger, default=REPORT_PENDING)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")
    claim_token: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    file_name: Mapped[str | None] = mapped_column(String(200))
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ViewingDR(EscrowBase):
    __tablename__ = "viewing_dr"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    dr_id: Mapped[int] = mapped_column(ForeignKey("disbursement_requests.id"))
    viewed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class ViewingPayment(EscrowBase):
    __tablename__ = "viewing_payment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    payment_ref: Mapped[str] = mapped_column(String(100))
    viewed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class StatusCheck(EscrowBase):
    __tablename__ = "status_checks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checked_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")
    s3_ok: Mapped[bool] = mapped_column(Boolean)
    cloudfront_ok: Mapped[bool] = mapped_column(Boolean)
    posted: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text)


class HuntingtonBatch(EscrowBase):
    __tablename__ = "huntington_batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(30), default="PENDING")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class HuntingtonBatchItem(EscrowBase):
    __tablename__ = "huntington_batch_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("huntington_batches.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    dr_id: Mapped[int | None] = mapped_column(ForeignKey("disbursement_requests.id"))
    kind: Mapped[str] = mapped_column(String(4))
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    beneficiary: Mapped[str] = mapped_column(String(200))
    account_token: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="PENDING")
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    retryable: Mapped[bool | None] = mapped_column(Boolean)
    bank_transfer_id: Mapped[str | None] = mapped_column(String(100))
    submitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class HuntingtonItemEvent(EscrowBase):
    __tablename__ = "huntington_item_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("huntington_batch_items.id"))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class HuntingtonOperatorAction(EscrowBase):
    """Audit record of an operator action on a batch: who, when, which items, why."""

    __tablename__ = "huntington_operator_actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("huntington_batches.id"))
    action: Mapped[str] = mapped_column(String(30))
    operator: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    item_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    job_message_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default="now()")
