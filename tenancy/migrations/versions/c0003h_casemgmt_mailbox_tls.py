"""casemgmt: per-mailbox IMAP transport security (STARTTLS, explicit plain-text override)

A mailbox connects with implicit TLS (use_ssl), with STARTTLS (starttls), or in clear;
in clear, LOGIN is refused unless allow_plaintext_auth says so for that mailbox.
Existing plain-text mailboxes therefore stop syncing with a clear error until an
operator chooses TLS or sets the override (docs/security.md, "TLS").

Revision ID: c0003h
Revises: c0002d
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "c0003h"
down_revision = "c0002d"
branch_labels = None
depends_on = None

SCHEMA = "casemgmt"


def upgrade() -> None:
    op.add_column("mailboxes", sa.Column("starttls", sa.Boolean, nullable=False, server_default=sa.false()),
                  schema=SCHEMA)
    op.add_column("mailboxes", sa.Column("allow_plaintext_auth", sa.Boolean, nullable=False,
                                         server_default=sa.false()), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("mailboxes", "allow_plaintext_auth", schema=SCHEMA)
    op.drop_column("mailboxes", "starttls", schema=SCHEMA)
