"""case management (Orchid) agency schema: agencies, admins, cases, contacts, mailboxes,
emails and matches, notifications, health checks, daily statistics, sessions and tokens

Every table lives in the PostgreSQL schema ``casemgmt``: each tenant database is upgraded
to every head of the shared tree, and the escrow branch has tables of the same names
(``cases``, ``notifications``), so each product keeps to its own namespace.

Revision ID: c0001
Revises: t0001
Create Date: 2026-11-22
"""
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "c0001"
down_revision = "t0001"
branch_labels = ("casemgmt",)
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMA = "casemgmt"


def _table(name: str, *elements: Any) -> None:
    op.create_table(name, *elements, schema=SCHEMA)


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    _table(
        "agencies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False, unique=True),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="America/New_York"),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.Column("deleted_at", TS),
    )
    _table(
        "admins",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("agency_id", sa.Integer, sa.ForeignKey("casemgmt.agencies.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
    )
    # agency_id is nullable on purpose: legacy imports created cases without one, and the
    # health check "cases_without_agency" reports them instead of the schema hiding them.
    _table(
        "cases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("agency_id", sa.Integer, sa.ForeignKey("casemgmt.agencies.id")),
        sa.Column("owner_admin_id", sa.Integer, sa.ForeignKey("casemgmt.admins.id")),
        sa.Column("reference", sa.String(50), nullable=False, unique=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="open"),
        sa.Column("opened_at", TS, nullable=False, server_default=_now()),
        sa.Column("closed_at", TS),
        sa.Column("deleted_at", TS),
        sa.CheckConstraint("status IN ('open', 'closed')", name="ck_cases_status"),
    )
    _table(
        "contacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("casemgmt.cases.id")),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.Column("deleted_at", TS),
    )
    op.create_index("ix_contacts_email_lower", "contacts", [sa.text("lower(email)")], schema=SCHEMA)
    _table(
        "mailboxes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("admin_id", sa.Integer, sa.ForeignKey("casemgmt.admins.id"), nullable=False, unique=True),
        sa.Column("provider", sa.String(20), nullable=False, server_default="imap"),
        sa.Column("email_address", sa.String(320), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("port", sa.Integer),
        sa.Column("use_ssl", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("username", sa.String(320)),
        sa.Column("folder", sa.String(200), nullable=False, server_default="INBOX"),
        sa.Column("status", sa.String(20), nullable=False, server_default="connected"),
        # Fernet token (AES-128-CBC + HMAC-SHA256) of the password or OAuth token, keyed by
        # CASEMGMT_CREDENTIAL_KEYS; NULL once disconnected. Never stored in clear.
        sa.Column("credential_ciphertext", sa.LargeBinary),
        sa.Column("credential_kind", sa.String(20), nullable=False, server_default="password"),
        # Sync cursor: (uidvalidity, last_uid) of the folder; a provider without UIDs
        # (Gmail history id, Graph delta) keeps its opaque cursor in sync_cursor.
        sa.Column("uidvalidity", sa.BigInteger),
        sa.Column("last_uid", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("sync_cursor", sa.Text),
        sa.Column("last_synced_at", TS),
        sa.Column("last_error", sa.Text),
        sa.Column("connected_at", TS, nullable=False, server_default=_now()),
        sa.Column("disconnected_at", TS),
        sa.CheckConstraint("status IN ('connected', 'disconnected', 'error')", name="ck_mailboxes_status"),
        sa.CheckConstraint("provider IN ('imap', 'gmail', 'msgraph')", name="ck_mailboxes_provider"),
        sa.CheckConstraint("credential_kind IN ('password', 'oauth_token')", name="ck_mailboxes_credential_kind"),
    )
    _table(
        "emails",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("casemgmt.mailboxes.id"), nullable=False),
        # RFC 5322 Message-ID, or "<sha256:...>" of the headers when a message has none:
        # the identity that survives a UIDVALIDITY change.
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger),
        sa.Column("provider_uid", sa.BigInteger),
        sa.Column("thread_id", sa.String(998), nullable=False),
        sa.Column("in_reply_to", sa.String(998)),
        sa.Column("subject", sa.Text, nullable=False, server_default=""),
        sa.Column("from_address", sa.String(320)),
        sa.Column("to_addresses", postgresql.ARRAY(sa.String(320)), nullable=False, server_default="{}"),
        sa.Column("cc_addresses", postgresql.ARRAY(sa.String(320)), nullable=False, server_default="{}"),
        sa.Column("sent_at", TS),
        sa.Column("size_bytes", sa.Integer),
        sa.Column("body_preview", sa.Text),
        sa.Column("synced_at", TS, nullable=False, server_default=_now()),
        sa.Column("matched_at", TS),
        sa.UniqueConstraint("mailbox_id", "message_id", name="uq_emails_mailbox_message_id"),
    )
    op.create_index("ix_emails_thread_id", "emails", ["thread_id"], schema=SCHEMA)
    op.create_index("ix_emails_unmatched", "emails", ["id"], postgresql_where=sa.text("matched_at IS NULL"),
                    schema=SCHEMA)
    _table(
        "email_matches",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("email_id", sa.BigInteger, sa.ForeignKey("casemgmt.emails.id"), nullable=False),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("casemgmt.cases.id"), nullable=False),
        sa.Column("contact_id", sa.Integer, sa.ForeignKey("casemgmt.contacts.id")),
        sa.Column("match_type", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.UniqueConstraint("email_id", "case_id", name="uq_email_matches_email_case"),
        sa.CheckConstraint("match_type IN ('address', 'thread')", name="ck_email_matches_type"),
    )
    _table(
        "reminders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("casemgmt.cases.id")),
        sa.Column("admin_id", sa.Integer, sa.ForeignKey("casemgmt.admins.id"), nullable=False),
        sa.Column("remind_at", TS, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
    )
    _table(
        "case_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("casemgmt.cases.id"), nullable=False),
        sa.Column("admin_id", sa.Integer, sa.ForeignKey("casemgmt.admins.id"), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("starts_at", TS, nullable=False),
    )
    # The outbox of scheduled notifications; sent_at is the sent marker. (kind, source_id)
    # is unique so generating the notification for a reminder or event twice is a no-op.
    _table(
        "notifications",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("source_id", sa.Integer, nullable=False),
        sa.Column("admin_id", sa.Integer, sa.ForeignKey("casemgmt.admins.id"), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("sent_at", TS),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.UniqueConstraint("kind", "source_id", name="uq_notifications_kind_source"),
        sa.CheckConstraint("kind IN ('reminder', 'upcoming_event')", name="ck_notifications_kind"),
    )
    op.create_index("ix_notifications_unsent", "notifications", ["due_at"],
                    postgresql_where=sa.text("sent_at IS NULL"), schema=SCHEMA)
    _table(
        "health_check_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_message_id", sa.String(64)),
        sa.Column("started_at", TS, nullable=False, server_default=_now()),
        sa.Column("finished_at", TS),
        sa.Column("checks_failed", sa.Integer, nullable=False, server_default="0"),
    )
    _table(
        "health_check_results",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("casemgmt.health_check_runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("agency_id", sa.Integer, sa.ForeignKey("casemgmt.agencies.id")),
        sa.Column("check_name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("failing_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sample_ids", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("detail", sa.Text),
        sa.Column("checked_at", TS, nullable=False, server_default=_now()),
        sa.CheckConstraint("status IN ('pass', 'fail', 'error')", name="ck_health_check_results_status"),
    )
    op.create_index("ix_health_check_results_run", "health_check_results", ["run_id", "status"], schema=SCHEMA)
    _table(
        "daily_statistics",
        sa.Column("agency_id", sa.Integer, sa.ForeignKey("casemgmt.agencies.id"), primary_key=True),
        sa.Column("stat_date", sa.Date, primary_key=True),
        sa.Column("cases_opened", sa.Integer, nullable=False),
        sa.Column("cases_closed", sa.Integer, nullable=False),
        sa.Column("open_cases", sa.Integer, nullable=False),
        sa.Column("emails_synced", sa.Integer, nullable=False),
        sa.Column("emails_matched", sa.Integer, nullable=False),
        sa.Column("notifications_sent", sa.Integer, nullable=False),
        sa.Column("computed_at", TS, nullable=False, server_default=_now()),
    )
    _table(
        "sessions",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("admin_id", sa.Integer, sa.ForeignKey("casemgmt.admins.id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"], schema=SCHEMA)
    _table(
        "tokens",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("admin_id", sa.Integer, sa.ForeignKey("casemgmt.admins.id"), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_tokens_expires_at", "tokens", ["expires_at"], schema=SCHEMA)


def downgrade() -> None:
    for table in ("tokens", "sessions", "daily_statistics", "health_check_results", "health_check_runs",
                  "notifications", "case_events", "reminders", "email_matches", "emails", "mailboxes",
                  "contacts", "cases", "admins", "agencies"):
        op.drop_table(table, schema=SCHEMA)
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")
