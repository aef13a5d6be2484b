"""escrow: outbox retry back-off; FAILED notifications and today's closing cases found by index

A notification the SMTP server refused waits until ``next_attempt_at`` before it is
tried again (the broker's retries of a run cannot spend its attempts in seconds);
FAILED ones (refused on every attempt) and the active cases closing on the day of the
latest close-reminder run are counted by the exporter on every scrape.

Revision ID: e0004d2
Revises: e0003d
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "e0004d2"
down_revision = "e0003d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.create_index("ix_notifications_failed", "notifications", ["id"], postgresql_where=sa.text("status = 'FAILED'"))
    op.create_index("ix_cases_scheduled_close_date", "cases", ["scheduled_close_date"],
                    postgresql_where=sa.text("status = 'ACTIVE'"))


def downgrade() -> None:
    op.drop_index("ix_cases_scheduled_close_date", table_name="cases")
    op.drop_index("ix_notifications_failed", table_name="notifications")
    op.drop_column("notifications", "next_attempt_at")
