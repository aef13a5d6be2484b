"""Operational errors as one line that says what to do, passwords masked, no traceback."""

from __future__ import annotations

import redis
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from jobcore.errors import PlatformError
from jobcore.settings import Settings, mask_url


def describe(exc: BaseException, settings: Settings | None) -> str | None:
    """The one line for an error an operator can act on; None for a real bug (which then
    keeps its traceback)."""
    from tenancy.registry import describe_error

    db = mask_url(settings.database_url) if settings else "the control database"
    if isinstance(exc, ProgrammingError) and "does not exist" in str(getattr(exc, "orig", exc)) \
            and "relation" in str(getattr(exc, "orig", exc)):
        return (f"the control database {db} has no ledger tables: run `alembic upgrade head` "
                "(with DATABASE_URL set, or from the repository root where .env holds it)")
    if isinstance(exc, OperationalError):
        return f"cannot reach PostgreSQL at {db}: {describe_error(exc)}"
    if isinstance(exc, redis.RedisError):
        where = mask_url(settings.redis_url) if settings else "Redis"
        return f"cannot reach Redis at {where}: {exc}"
    if isinstance(exc, (PlatformError, SQLAlchemyError)):
        return describe_error(exc)
    return None
