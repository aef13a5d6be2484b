"""Reading the ledger from tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import wait_for


def settle() -> None:
    """Apply the Redis ledger buffer now (redis mode; a no-op when it is empty)."""
    from jobcore.ledger import process_store

    process_store().drain_spool()


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
    """Wait until the run of ``message_id`` has ``status``; return the row."""
    def check() -> dict[str, Any] | None:
        row = run_row(message_id)
        return row if row and row["status"] == status else None

    return wait_for(check, timeout, what=f"run {message_id} to be {status} (now: {run_row(message_id)})")
