"""casemgmt: per-notification retry back-off

A notification the SMTP server refused (or lost after connecting) waits until
``next_attempt_at`` before it is tried again, so the broker's quick retries of a run
and the every-15-minutes schedule cannot spend its attempts within minutes; an SMTP
server that cannot be reached at all charges no attempt (actors/casemgmt/notifications.py).

Revision ID: c0004d2
Revises: c0003h
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "c0004d2"
down_revision = "c0003h"
branch_labels = None
depends_on = None

SCHEMA = "casemgmt"


def upgrade() -> None:
    op.add_column("notifications", sa.Column("next_attempt_at", sa.DateTime(timezone=True)), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("notifications", "next_attempt_at", schema=SCHEMA)
