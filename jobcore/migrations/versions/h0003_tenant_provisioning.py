"""tenant provisioning state, unique tenant database URLs

Revision ID: h0003
Revises: 0003
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = 'h0003'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing tenants were created and migrated before their row was written: ready.
    op.add_column('tenants', sa.Column('status', sa.String(length=16), server_default='ready', nullable=False))
    op.add_column('tenants', sa.Column('provision_error', sa.Text(), nullable=True))
    op.add_column('tenants', sa.Column('owns_database', sa.Boolean(), server_default='false', nullable=False))
    op.create_check_constraint('ck_tenants_status', 'tenants', "status IN ('provisioning', 'ready')")
    # Fails on a registry where two tenants already share a database: that has to be
    # resolved by hand (one of them reads the other's data), not papered over.
    op.create_unique_constraint('uq_tenants_database_url', 'tenants', ['database_url'])


def downgrade() -> None:
    op.drop_constraint('uq_tenants_database_url', 'tenants', type_='unique')
    op.drop_constraint('ck_tenants_status', 'tenants', type_='check')
    op.drop_column('tenants', 'owns_database')
    op.drop_column('tenants', 'provision_error')
    op.drop_column('tenants', 'status')
