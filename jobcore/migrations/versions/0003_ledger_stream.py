"""ledger stream cursor, dead events, operator audit trail

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'ledger_cursor',
        sa.Column('namespace', sa.String(length=200), nullable=False),
        sa.Column('epoch', sa.String(length=64), nullable=False),
        sa.Column('last_id', sa.String(length=64), nullable=False),
        sa.Column('applied', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('namespace'),
    )
    op.create_table(
        'ledger_dead_events',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('namespace', sa.String(length=200), nullable=False),
        sa.Column('stream_id', sa.String(length=64), nullable=False),
        sa.Column('payload', sa.LargeBinary(), nullable=False),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'operator_actions',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('message_id', sa.String(length=64), nullable=True),
        sa.Column('run_id', sa.BigInteger(), nullable=True),
        sa.Column('operator', sa.String(length=200), nullable=False),
        sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_operator_actions_message_id', 'operator_actions', ['message_id'])
    op.create_index('ix_operator_actions_created_at', 'operator_actions', ['created_at'])
    # retry chains are looked up by retry_of (refusing a second retry, the console's chain)
    op.create_index('ix_job_runs_retry_of', 'job_runs', ['retry_of'], postgresql_where=sa.text('retry_of IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_job_runs_retry_of', table_name='job_runs')
    op.drop_index('ix_operator_actions_created_at', table_name='operator_actions')
    op.drop_index('ix_operator_actions_message_id', table_name='operator_actions')
    op.drop_table('operator_actions')
    op.drop_table('ledger_dead_events')
    op.drop_table('ledger_cursor')
