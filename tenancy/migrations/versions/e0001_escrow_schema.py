"""escrow (SeedTrust) tenant schema: cases, parties, disbursement requests, outbox,
balance alerts, report queue, viewing caches, Huntington batches

Revision ID: e0001
Revises: t0001
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "e0001"
down_revision = "t0001"
branch_labels = ("escrow",)
depends_on = None

ROLES = "('IP', 'IP_REP', 'CASE_MANAGER', 'ESCROW_SPECIALIST', 'ADMIN')"
NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        # Platform-wide role; per-case roles live in case_parties.
        sa.Column("role", sa.String(30), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("on_site", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_seen_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(f"role IN {ROLES}", name="ck_users_role"),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("number", sa.String(40), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="ACTIVE"),
        sa.Column("balance", sa.Numeric(14, 2), nullable=False, server_default="0"),
        sa.Column("minimum_balance", sa.Numeric(14, 2), nullable=False, server_default="0"),
        sa.Column("scheduled_close_date", sa.Date),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint("status IN ('ACTIVE', 'CLOSED', 'ON_HOLD')", name="ck_cases_status"),
    )
    op.create_table(
        "case_parties",
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(30), primary_key=True),
        sa.CheckConstraint(f"role IN {ROLES}", name="ck_case_parties_role"),
    )
    op.create_table(
        "disbursement_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("requested_by", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("payee", sa.String(200), nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="PENDING"),
        # When the auto-authorize window ends; NULL means manual approval only.
        sa.Column("auto_authorize_at", sa.DateTime(timezone=True)),
        # Bumped by every change; approval is a conditional UPDATE on (status, version).
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("approved_at", sa.DateTime(timezone=True)),
        sa.Column("approved_by", sa.String(50)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint("status IN ('PENDING', 'APPROVED', 'REJECTED', 'ON_HOLD', 'PAID')", name="ck_dr_status"),
        sa.CheckConstraint("amount > 0", name="ck_dr_amount"),
    )
    op.create_index("ix_dr_pending_due", "disbursement_requests", ["auto_authorize_at"],
                    postgresql_where=sa.text("status = 'PENDING'"))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(50), nullable=False),
        # One logical notification per key: re-runs insert nothing (ON CONFLICT DO NOTHING).
        sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(10), nullable=False, server_default="PENDING"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('PENDING', 'SENT', 'FAILED')", name="ck_notifications_status"),
    )
    op.create_index("ix_notifications_pending", "notifications", ["id"], postgresql_where=sa.text("status = 'PENDING'"))
    op.create_table(
        "close_reminders",
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("close_date", sa.Date, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "balance_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("check_date", sa.Date, nullable=False),
        sa.Column("balance", sa.Numeric(14, 2), nullable=False),
        sa.Column("minimum_balance", sa.Numeric(14, 2), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.UniqueConstraint("case_id", "check_date", name="uq_balance_alerts_case_date"),
    )
    op.create_table(
        "report_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id")),
        sa.Column("report_type", sa.String(40), nullable=False),
        # The seed's queue: 1 pending, 2 in progress, 3 emailed; 4 failed for good.
        sa.Column("status", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("claim_token", sa.String(64)),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("file_name", sa.String(200)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN (1, 2, 3, 4)", name="ck_report_requests_status"),
    )
    op.create_index("ix_report_requests_queue", "report_requests", ["status", "created_at", "id"])
    op.create_table(
        "viewing_dr",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("dr_id", sa.Integer, sa.ForeignKey("disbursement_requests.id"), nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "viewing_payment",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("payment_ref", sa.String(100), nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "status_checks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("s3_ok", sa.Boolean, nullable=False),
        sa.Column("cloudfront_ok", sa.Boolean, nullable=False),
        sa.Column("posted", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_table(
        "huntington_batches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(30), nullable=False, server_default="PENDING"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.CheckConstraint("status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'NEEDS_RECONCILIATION')",
                           name="ck_hb_status"),
    )
    op.create_table(
        "huntington_batch_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("huntington_batches.id"), nullable=False),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("dr_id", sa.Integer, sa.ForeignKey("disbursement_requests.id")),
        sa.Column("kind", sa.String(4), nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("beneficiary", sa.String(200), nullable=False),
        # A token for the beneficiary's bank account, never the number itself.
        sa.Column("account_token", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="PENDING"),
        # Written and committed BEFORE the bank call; the bank de-duplicates on it.
        sa.Column("idempotency_key", sa.String(100), unique=True),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retryable", sa.Boolean),
        sa.Column("bank_transfer_id", sa.String(100)),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint("kind IN ('ACH', 'WIRE')", name="ck_hbi_kind"),
        sa.CheckConstraint("status IN ('PENDING', 'SUBMITTING', 'COMPLETED', 'UNKNOWN', 'FAILED')",
                           name="ck_hbi_status"),
        sa.CheckConstraint("amount > 0", name="ck_hbi_amount"),
    )
    op.create_index("ix_hbi_batch", "huntington_batch_items", ["batch_id", "id"])
    op.create_table(
        "huntington_item_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("huntington_batch_items.id"), nullable=False),
        sa.Column("from_status", sa.String(20)),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )


def downgrade() -> None:
    for table in ("huntington_item_events", "huntington_batch_items", "huntington_batches", "status_checks",
                  "viewing_payment", "viewing_dr", "report_requests", "balance_alerts", "close_reminders",
                  "notifications", "disbursement_requests", "case_parties", "cases", "users"):
        op.drop_table(table)
