"""escrow: partial indexes on open Huntington batches and items (exporter and auto-heal scans)

Revision ID: e0002
Revises: e0001
Create Date: 2026-11-22
"""
from alembic import op

revision = "e0002"
down_revision = "e0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only open rows are ever scanned by the exporter's "stuck" metrics and by auto-heal;
    # partial indexes keep those scans small however much history the tables hold.
    op.create_index("ix_hb_open", "huntington_batches", ["status"],
                    postgresql_where="status NOT IN ('COMPLETED', 'FAILED')")
    op.create_index("ix_hbi_open", "huntington_batch_items", ["status", "updated_at"],
                    postgresql_where="status IN ('PENDING', 'SUBMITTING', 'UNKNOWN')")


def downgrade() -> None:
    op.drop_index("ix_hbi_open", table_name="huntington_batch_items")
    op.drop_index("ix_hb_open", table_name="huntington_batches")
