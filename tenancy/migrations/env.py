"""Alembic environment of a tenant database. The URL comes from ``-x url=...`` or from
``config.attributes['connection']`` when called programmatically."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from jobcore.db import direct_url, normalise_url

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("tenant migrations need -x url=postgresql://...")
    # The server itself, not PgBouncer, when PG_DIRECT_ADDRESS is set.
    engine = create_engine(normalise_url(direct_url(url)), poolclass=pool.NullPool, hide_parameters=True,
                           connect_args={"connect_timeout": 5})
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
