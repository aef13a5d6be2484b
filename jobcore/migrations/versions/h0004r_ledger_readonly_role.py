"""read-only role for Grafana: the ledger tables, and tenants without their database URLs

Grafana read the ledger as the database owner, so it could read ``tenants.database_url``:
every tenant database's password. This creates the role (``LEDGER_READONLY_ROLE``,
default ``jobs_readonly``) NOLOGIN if it does not exist; ``python -m
jobcore.readonly_role`` gives it LOGIN and its password (docs/security.md, "Who can read
what"). It may SELECT the tables below and, of ``tenants``, only the listed columns.
Tables added later are not readable until a migration grants them: a new table may hold
secrets.

Revision ID: h0004r
Revises: 0005d2
Create Date: 2026-12-02
"""
from alembic import op

from jobcore.settings import get_settings

revision = 'h0004r'
down_revision = '0005d2'
branch_labels = None
depends_on = None

# Not ledger_dead_events (raw event bytes, kept for forensics), not alembic_version.
READABLE_TABLES = ("job_runs", "job_errors", "rejected_messages", "schedule_ticks", "schedule_tick_runs",
                   "operator_actions", "ledger_cursor")
# Not database_url (user and password of the tenant's database), nor provision_error
# (a failed provisioning's error, about that database).
TENANT_COLUMNS = ("id", "slug", "name", "product", "active", "status", "owns_database", "created_at")


def _quote(identifier: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote(identifier)


def _on_database(statement: str, role: str) -> str:
    """``statement`` (GRANT CONNECT ... TO / REVOKE CONNECT ... FROM) on the current database."""
    return (f"DO $$ BEGIN EXECUTE '{statement} ' || quote_ident(current_database()) || ' {role} ' || "
            f"quote_ident({_literal(get_settings().ledger_readonly_role)}); END $$")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    name = get_settings().ledger_readonly_role
    literal = _literal(name)
    # Roles belong to the cluster: another control database (or a concurrent migration of
    # one) may have created it already. Creating one needs CREATEROLE; without it, say so.
    op.execute(f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal}) THEN
    EXECUTE 'CREATE ROLE ' || quote_ident({literal}) || ' NOLOGIN';
  END IF;
EXCEPTION
  WHEN duplicate_object OR unique_violation THEN NULL;
  WHEN insufficient_privilege THEN
    RAISE EXCEPTION USING MESSAGE = 'cannot create role ' || {literal} || ': this user lacks CREATEROLE',
      HINT = 'As a superuser, run CREATE ROLE ' || quote_ident({literal}) || ' NOLOGIN; then migrate again.';
END
$$""")
    role = _quote(name)
    op.execute(_on_database("GRANT CONNECT ON DATABASE", "TO"))
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    op.execute(f"GRANT SELECT ON {', '.join(READABLE_TABLES)} TO {role}")
    op.execute(f"GRANT SELECT ({', '.join(TENANT_COLUMNS)}) ON tenants TO {role}")


def downgrade() -> None:
    # The role stays: it belongs to the cluster, and other databases may grant it too.
    role = _quote(get_settings().ledger_readonly_role)
    op.execute(f"REVOKE SELECT ({', '.join(TENANT_COLUMNS)}) ON tenants FROM {role}")
    op.execute(f"REVOKE SELECT ON {', '.join(READABLE_TABLES)} FROM {role}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
    op.execute(_on_database("REVOKE CONNECT ON DATABASE", "FROM"))
