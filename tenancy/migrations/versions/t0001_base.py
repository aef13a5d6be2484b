"""tenant database base: schema bookkeeping shared by every product branch

Revision ID: t0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "t0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Marks a database as a tenant database and records which tenant it belongs to,
    # so a mis-pointed URL is detected before a job touches data.
    op.create_table(
        "tenant_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_meta")
