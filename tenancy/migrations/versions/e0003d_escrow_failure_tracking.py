"""escrow: report retry back-off and failure time, operator audit of Huntington re-sends,
balance-alert lookups by check date

Revision ID: e0003d
Revises: e0002
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "e0003d"
down_revision = "e0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A request whose attempt failed waits until next_attempt_at (time-based back-off kept
    # on the row, so retries of the job itself cannot burn its attempts in seconds).
    op.add_column("report_requests", sa.Column("next_attempt_at", TS))
    op.add_column("report_requests", sa.Column("failed_at", TS))
    # Who re-sent which items of a batch, when, and why (Huntington operator actions).
    op.create_table(
        "huntington_operator_actions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("huntington_batches.id"), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("item_ids", postgresql.ARRAY(sa.Integer), nullable=False),
        sa.Column("job_message_id", sa.String(64)),
        sa.Column("detail", sa.Text),
        sa.Column("at", TS, nullable=False, server_default=sa.text("now()")),
    )
    op.create_index("ix_hoa_batch", "huntington_operator_actions", ["batch_id", "id"])
    # FAILED batches and items are read by the exporter on every scrape; keep that small.
    op.create_index("ix_hbi_failed", "huntington_batch_items", ["status", "retryable"],
                    postgresql_where=sa.text("status = 'FAILED'"))
    op.create_index("ix_hb_failed", "huntington_batches", ["status"],
                    postgresql_where=sa.text("status = 'FAILED'"))
    # The exporter reads the latest balance check's findings.
    op.create_index("ix_balance_alerts_check_date", "balance_alerts", ["check_date"])


def downgrade() -> None:
    op.drop_index("ix_balance_alerts_check_date", table_name="balance_alerts")
    op.drop_index("ix_hb_failed", table_name="huntington_batches")
    op.drop_index("ix_hbi_failed", table_name="huntington_batch_items")
    op.drop_index("ix_hoa_batch", table_name="huntington_operator_actions")
    op.drop_table("huntington_operator_actions")
    op.drop_column("report_requests", "failed_at")
    op.drop_column("report_requests", "next_attempt_at")
