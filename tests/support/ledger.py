"""Reading the ledger from tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import wait_for


def platform() -> Any:
    import jobplatform

    return jobplatform.platform


def settle() -> None:
    """Apply everything in the Redis ledger buffer now (as revocation and the CLI do)."""
    platform().sync()


def revoke(message_id: str, operator: str = "test") -> Any:
    """Revoke through the platform (the same function ``jobctl revoke`` calls)."""
    return platform().revoke(message_id, operator=operator)


def run_row(message_id: str) -> dict[str, Any] | None:
    with control_engine().connect() as conn:
        row = conn.execute(text("SELECT * FROM job_runs WHERE message_id = :m"), {"m": message_id}).mappings().first()
        return dict(row) if row else None


def error_rows(message_id: str) -> list[dict[str, Any]]:
    with control_engine().connect() as conn:
        rows = conn.execute(text(
            "SELECT e.* FROM job_errors e JOIN job_runs r ON r.id = e.job_run_id "
            "WHERE r.message_id = :m ORDER BY e.attempt"), {"m": message_id}).mappings().all()
        return [dict(r) for r in rows]


def count(sql: str, **params: Any) -> int:
    with control_engine().connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def wait_status(message_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the run of ``message_id`` has ``status`` in PostgreSQL; return the row.
    Waits for the workers' own drainer (nothing here applies the buffer)."""
    def check() -> dict[str, Any] | None:
        row = run_row(message_id)
        return row if row and row["status"] == status else None

    return wait_for(check, timeout, what=f"run {message_id} to be {status} (now: {run_row(message_id)})")


def drain(redis_url: str) -> None:
    """Apply the test namespace's ledger buffer held by another Redis (a private
    redis-server), as a worker's drainer on that Redis would."""
    import redis

    from jobcore.keys import Keys
    from ledger.drainer import Drainer
    from ledger.store import PgStore
    from ledger.stream import EventStream
    from tests.conftest import NAMESPACE, TEST_ENV

    store = PgStore(TEST_ENV["DATABASE_URL"], NAMESPACE)
    try:
        Drainer(EventStream(redis.Redis.from_url(redis_url), Keys(NAMESPACE)), store).drain_until(timeout_s=30)
    finally:
        store.drop()
