"""tenants: their own storage (S3 bucket / CloudFront) when they have one

The AWS status check probes the platform's storage once per tick, plus the storage of
each tenant that has its own (``storage``: s3_bucket, and optionally s3_endpoint_url,
cloudfront_url, aws_region); NULL means the platform's.

Revision ID: 0005d2
Revises: 0004d2
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0005d2'
down_revision = '0004d2'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('tenants', sa.Column('storage', postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column('tenants', 'storage')
