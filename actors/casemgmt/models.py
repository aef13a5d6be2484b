"""Typed SQLAlchemy models of an agency (tenant) database; the schema is created by the
tenant migration branch ``casemgmt`` (tenancy/migrations/versions/c0001_*.py)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TS = DateTime(timezone=True)


SCHEMA = "casemgmt"


class AgencyBase(DeclarativeBase):
    """Metadata of the agency database (separate from the control database's models);
    every table is in the ``casemgmt`` schema (see the c0001 migration)."""

    metadata = MetaData(schema=SCHEMA)


class Agency(AgencyBase):
    __tablename__ = "agencies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    slug: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), server_default="America/New_York")
    created_at: Mapped[datetime] = mapped_column(TS, server_default="now()")
    deleted_at: Mapped[datetime | None] = mapped_column(TS)


class Admin(AgencyBase):
    __tablename__ = "admins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.agencies.id"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")


class Case(AgencyBase):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int | None] = mapped_column(ForeignKey("casemgmt.agencies.id"))
    owner_admin_id: Mapped[int | None] = mapped_column(ForeignKey("casemgmt.admins.id"))
    reference: Mapped[str] = mapped_column(String(50))
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), server_default="open")
    opened_at: Mapped[datetime] = mapped_column(TS, server_default="now()")
    closed_at: Mapped[datetime | None] = mapped_column(TS)
    deleted_at: Mapped[datetime | None] = mapped_column(TS)


class Contact(AgencyBase):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("casemgmt.cases.id"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    deleted_at: Mapped[datetime | None] = mapped_column(TS)


class Mailbox(AgencyBase):
    __tablename__ = "mailboxes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.admins.id"))
    provider: Mapped[str] = mapped_column(String(20), server_default="imap")
    email_address: Mapped[str] = mapped_column(String(320))
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    use_ssl: Mapped[bool] = mapped_column(Boolean, server_default="true")
    # Transport security (migration c0003h): STARTTLS when not use_ssl; LOGIN in clear
    # only with allow_plaintext_auth.
    starttls: Mapped[bool] = mapped_column(Boolean, server_default="false")
    allow_plaintext_auth: Mapped[bool] = mapped_column(Boolean, server_default="false")
    username: Mapped[str | None] = mapped_column(String(320))
    folder: Mapped[str] = mapped_column(String(200), server_default="INBOX")
    status: Mapped[str] = mapped_column(String(20), server_default="connected")
    credential_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    credential_kind: Mapped[str] = mapped_column(String(20), server_default="password")
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    sync_cursor: Mapped[str | None] = mapped_column(Text)
    last_synced_at: Mapped[datetime | None] = mapped_column(TS)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The current failure streak (c0002d): cleared by the next successful sync.
    failing_since: Mapped[datetime | None] = mapped_column(TS)
    last_failed_at: Mapped[datetime | None] = mapped_column(TS)
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    connected_at: Mapped[datetime] = mapped_column(TS, server_default="now()")
    disconnected_at: Mapped[datetime | None] = mapped_column(TS)


class Email(AgencyBase):
    __tablename__ = "emails"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.mailboxes.id"))
    message_id: Mapped[str] = mapped_column(String(998))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    provider_uid: Mapped[int | None] = mapped_column(BigInteger)
    thread_id: Mapped[str] = mapped_column(String(998))
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    subject: Mapped[str] = mapped_column(Text, server_default="")
    from_address: Mapped[str | None] = mapped_column(String(320))
    to_addresses: Mapped[list[str]] = mapped_column(ARRAY(String(320)), server_default="{}")
    cc_addresses: Mapped[list[str]] = mapped_column(ARRAY(String(320)), server_default="{}")
    sent_at: Mapped[datetime | None] = mapped_column(TS)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    body_preview: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[datetime] = mapped_column(TS, server_default="now()")
    matched_at: Mapped[datetime | None] = mapped_column(TS)


class EmailMatch(AgencyBase):
    __tablename__ = "email_matches"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.emails.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.cases.id"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("casemgmt.contacts.id"))
    match_type: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(TS, server_default="now()")


class Reminder(AgencyBase):
    __tablename__ = "reminders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("casemgmt.cases.id"))
    admin_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.admins.id"))
    remind_at: Mapped[datetime] = mapped_column(TS)
    message: Mapped[str] = mapped_column(Text)


class CaseEvent(AgencyBase):
    __tablename__ = "case_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.cases.id"))
    admin_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.admins.id"))
    title: Mapped[str] = mapped_column(String(300))
    starts_at: Mapped[datetime] = mapped_column(TS)


class Notification(AgencyBase):
    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    source_id: Mapped[int] = mapped_column(Integer)
    admin_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.admins.id"))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime] = mapped_column(TS)
    sent_at: Mapped[datetime | None] = mapped_column(TS)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # Back-off after a charged failure (migration c0004d2).
    next_attempt_at: Mapped[datetime | None] = mapped_column(TS)


class HealthCheckRun(AgencyBase):
    __tablename__ = "health_check_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_message_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(TS, server_default="now()")
    finished_at: Mapped[datetime | None] = mapped_column(TS)
    checks_failed: Mapped[int] = mapped_column(Integer, server_default="0")


class HealthCheckResult(AgencyBase):
    __tablename__ = "health_check_results"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.health_check_runs.id"))
    agency_id: Mapped[int | None] = mapped_column(ForeignKey("casemgmt.agencies.id"))
    check_name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10))
    failing_count: Mapped[int] = mapped_column(Integer, server_default="0")
    sample_ids: Mapped[list[Any]] = mapped_column(JSONB, server_default="[]")
    detail: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column(TS, server_default="now()")


class DailyStatistics(AgencyBase):
    __tablename__ = "daily_statistics"
    agency_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.agencies.id"), primary_key=True)
    stat_date: Mapped[date] = mapped_column(Date, primary_key=True)
    cases_opened: Mapped[int] = mapped_column(Integer)
    cases_closed: Mapped[int] = mapped_column(Integer)
    open_cases: Mapped[int] = mapped_column(Integer)
    emails_synced: Mapped[int] = mapped_column(Integer)
    emails_matched: Mapped[int] = mapped_column(Integer)
    notifications_sent: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(TS, server_default="now()")


class AdminSession(AgencyBase):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.admins.id"))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, server_default="now()")
    expires_at: Mapped[datetime] = mapped_column(TS)


class Token(AgencyBase):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("casemgmt.admins.id"))
    kind: Mapped[str] = mapped_column(String(30))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, server_default="now()")
    expires_at: Mapped[datetime] = mapped_column(TS)
