"""Cleanup of expired sessions and tokens, in small batches.

Each batch is its own transaction: it picks at most ``batch_size`` expired ids with
``FOR UPDATE SKIP LOCKED`` (rows the web app is touching right now are left for the
next run instead of waited for) and deletes them, with a short ``lock_timeout`` so the
job never queues behind, or in front of, a long lock.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

TABLES = ("sessions", "tokens")


def delete_expired(session: Session, table: str, now: datetime, *, batch_size: int = 1000,
                   pause_s: float = 0.0) -> int:
    """Delete rows of ``table`` with ``expires_at < now`` in batches; returns rows deleted."""
    if table not in TABLES:
        raise ValueError(f"not a cleanable table: {table}")
    stmt = text(f"""
        DELETE FROM casemgmt.{table} WHERE id IN (
            SELECT id FROM casemgmt.{table} WHERE expires_at < :now ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED)
    """)
    total = 0
    while True:
        session.execute(text("SET LOCAL lock_timeout = '2s'"))
        n = int(session.execute(stmt, {"now": now, "n": batch_size}).rowcount)  # type: ignore[attr-defined]
        session.commit()
        total += n
        if n < batch_size:
            break
        if pause_s:
            time.sleep(pause_s)  # let autovacuum and the web app breathe between batches
    return total


def run_cleanup(session: Session, now: datetime, *, batch_size: int = 1000) -> dict[str, int]:
    """Delete expired sessions and tokens; returns rows deleted per table."""
    deleted = {table: delete_expired(session, table, now, batch_size=batch_size) for table in TABLES}
    log.info("cleanup deleted %s", deleted)
    return deleted
