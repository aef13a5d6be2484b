"""Alembic environment of the control database; the URL comes from DATABASE_URL (with
PG_DIRECT_ADDRESS, the server itself rather than PgBouncer: a migration needs a session)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

import periodic.models  # noqa: F401 - registers the tick tables on Base.metadata
import tenancy.models  # noqa: F401 - registers the tenants table on Base.metadata
from jobcore.db import direct_url, normalise_url
from jobcore.models import Base
from jobcore.settings import get_settings

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=normalise_url(direct_url(get_settings().database_url)), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(normalise_url(direct_url(get_settings().database_url)), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
