"""Operational errors as one line that says what to do, passwords masked, no traceback."""

from __future__ import annotations

import re

import psycopg2
import redis
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from jobcore.errors import PlatformError
from jobcore.settings import Settings, mask_url

# PostgreSQL error codes (SQLSTATE) of a schema that is missing or behind the code.
UNDEFINED_TABLE, UNDEFINED_COLUMN = "42P01", "42703"
_RELATION = re.compile(r'relation "(?:\w+\.)?(\w+)" does not exist')
_COLUMN_TABLE = re.compile(r'column (\w+)\.\w+ does not exist|of relation "(\w+)" does not exist')
_MISSING_DATABASE = re.compile(r'database "([^"]+)" does not exist')
MIGRATE = "run `alembic upgrade head` (with DATABASE_URL set, or from the repository root where .env holds it)"


def _control_tables() -> set[str]:
    """The tables of the control database (every model on the platform's metadata)."""
    import periodic.models  # noqa: F401 - registers schedule_ticks on the metadata
    import tenancy.models  # noqa: F401 - registers tenants
    from jobcore.models import Base

    return {t.name for t in Base.metadata.tables.values()}


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def _schema_error(exc: BaseException, db: str) -> str | None:
    """A missing table or column: the control database or a tenant's is behind the code."""
    cause = getattr(exc, "orig", None) or exc
    code, line = getattr(cause, "pgcode", None), _first_line(exc)
    if code == UNDEFINED_TABLE or (code is None and _RELATION.search(line)):
        found = _RELATION.search(line)
        if found is None or found.group(1) in _control_tables():
            return f"the control database {db} has no ledger tables: {MIGRATE}"
        return f"a tenant database is not migrated ({line}): run `jobctl tenants migrate`"
    if code == UNDEFINED_COLUMN:
        found = _COLUMN_TABLE.search(line)
        table = next((g for g in found.groups() if g), None) if found else None
        if table in _control_tables():
            return f"the control database {db} is behind this code ({line}): {MIGRATE}"
        return f"a database is behind this code ({line}): run `alembic upgrade head` and `jobctl tenants migrate`"
    return None


def describe(exc: BaseException, settings: Settings | None) -> str | None:
    """The one line for an error an operator can act on; None for a real bug (which then
    keeps its traceback)."""
    from tenancy.registry import describe_error

    db = mask_url(settings.database_url) if settings else "the control database"
    if isinstance(exc, (ProgrammingError, psycopg2.ProgrammingError)):
        line = _schema_error(exc, db)
        if line is not None:
            return line
    if isinstance(exc, (OperationalError, psycopg2.OperationalError)):
        missing = _MISSING_DATABASE.search(_first_line(exc))
        if missing and settings and missing.group(1) == make_url(settings.database_url).database:
            return (f"the control database {db} does not exist: create it (createdb {missing.group(1)}), then "
                    f"{MIGRATE}; .ci/up does both")
        return f"cannot reach PostgreSQL at {db}: {describe_error(exc)}"
    if isinstance(exc, redis.RedisError):
        where = mask_url(settings.redis_url) if settings else "Redis"
        return f"cannot reach Redis at {where}: {describe_error(exc)}"
    if isinstance(exc, (PlatformError, SQLAlchemyError, psycopg2.Error)):
        return describe_error(exc)
    return None
