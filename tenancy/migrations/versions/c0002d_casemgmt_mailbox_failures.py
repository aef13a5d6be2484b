"""casemgmt: per-mailbox sync failure streak (since when, how many in a row, last failure)

Revision ID: c0002d
Revises: c0001
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "c0002d"
down_revision = "c0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMA = "casemgmt"


def upgrade() -> None:
    # A failing mailbox fails alone: its streak is kept on its row and exported per mailbox.
    op.add_column("mailboxes", sa.Column("failing_since", TS), schema=SCHEMA)
    op.add_column("mailboxes", sa.Column("last_failed_at", TS), schema=SCHEMA)
    op.add_column("mailboxes", sa.Column("consecutive_failures", sa.Integer, nullable=False,
                                         server_default="0"), schema=SCHEMA)


def downgrade() -> None:
    for column in ("consecutive_failures", "last_failed_at", "failing_since"):
        op.drop_column("mailboxes", column, schema=SCHEMA)
