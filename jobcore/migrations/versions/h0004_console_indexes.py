"""indexes of the operator console's run lists and error groups

Revision ID: h0004
Revises: h0003
Create Date: 2026-12-03

Built CONCURRENTLY (outside a transaction): on a ledger of millions of rows a plain
CREATE INDEX would block the drainer's writes for as long as the build takes.
"""
from alembic import op


revision = 'h0004'
down_revision = 'h0003'
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_job_runs_actor_id", "job_runs", "(actor_name, id)", ""),
    ("ix_job_runs_tenant_id", "job_runs", "(tenant_id, id)", ""),
    ("ix_job_runs_resolution_id", "job_runs", "(resolution, id)", ""),
    ("ix_job_runs_open_id", "job_runs", "(status, id)", " WHERE status <> 'FINISHED'"),
    ("ix_job_runs_enqueued_id", "job_runs", "(enqueued_at, id)", ""),
    ("ix_job_errors_fingerprint", "job_errors", "(fingerprint, job_run_id)", ""),
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, columns, where in INDEXES:
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} {columns}{where}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _table, _columns, _where in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
