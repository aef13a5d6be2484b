"""Retention: finished runs older than N days are deleted in small batches.

Each batch is its own short transaction (``DELETE ... WHERE id IN (SELECT ... LIMIT n)``
on the ``finished_at`` index), so no long lock is held and workers keep writing while a
large backlog of history is pruned. ``job_errors`` rows go with their run (ON DELETE
CASCADE); ``retry_of`` links to a pruned run become NULL.
"""

from __future__ import annotations

import time

from sqlalchemy import text

from jobcore.db import control_engine


def prune(older_than_days: float, *, batch_size: int = 5000, pause_s: float = 0.05,
          max_batches: int | None = None) -> int:
    """Delete FINISHED runs finished more than ``older_than_days`` ago; return how many."""
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        with control_engine().begin() as conn:
            deleted = conn.execute(text(
                "DELETE FROM job_runs WHERE id IN ("
                "  SELECT id FROM job_runs WHERE status = 'FINISHED' "
                "  AND finished_at < now() - :days * interval '1 day' "
                "  ORDER BY finished_at LIMIT :n FOR UPDATE SKIP LOCKED)"),
                {"days": older_than_days, "n": batch_size}).rowcount
        total += deleted
        batches += 1
        if deleted < batch_size:
            break
        time.sleep(pause_s)  # let other writers in between batches
    with control_engine().begin() as conn:
        conn.execute(text("DELETE FROM rejected_messages WHERE created_at < now() - :days * interval '1 day'"),
                     {"days": older_than_days})
    return total
