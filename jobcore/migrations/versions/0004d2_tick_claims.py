"""schedule ticks: claim time and re-sends of ticks claimed but never sent

A scheduler that dies between claiming a tick (status CLAIMED) and sending its
dispatcher used to leave the tick CLAIMED for ever, and the catch-up counted it as done.
Any live scheduler now re-sends a tick CLAIMED longer than SCHEDULER_CLAIM_STALE_S ago
(``claimed_at``, re-set by the re-claim; ``reclaims`` counts them), and the exporter
counts the ones still unsent (partial indexes: both sets are tiny).

Revision ID: 0004d2
Revises: h0004
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0004d2'
down_revision = 'h0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('schedule_ticks', sa.Column('claimed_at', sa.DateTime(timezone=True),
                                              server_default=sa.text('now()'), nullable=False))
    op.add_column('schedule_ticks', sa.Column('reclaims', sa.Integer(), server_default='0', nullable=False))
    op.create_index('ix_schedule_ticks_claimed', 'schedule_ticks', ['claimed_at'],
                    postgresql_where=sa.text("status = 'CLAIMED'"))
    op.create_index('ix_schedule_ticks_reclaimed', 'schedule_ticks', ['claimed_at'],
                    postgresql_where=sa.text('reclaims > 0'))


def downgrade() -> None:
    op.drop_index('ix_schedule_ticks_reclaimed', table_name='schedule_ticks')
    op.drop_index('ix_schedule_ticks_claimed', table_name='schedule_ticks')
    op.drop_column('schedule_ticks', 'reclaims')
    op.drop_column('schedule_ticks', 'claimed_at')
