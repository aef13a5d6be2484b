"""Retention: finished runs older than N days are deleted in small batches.

Each batch is its own short transaction (``DELETE ... WHERE id IN (SELECT ... LIMIT n)``
on the ``finished_at`` index), so no long lock is held and workers keep writing while a
large backlog of history is pruned. ``job_errors`` rows go with their run (ON DELETE
CASCADE); ``retry_of`` links to a pruned run become NULL.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine

from ledger import queries


def prune(control: Engine, older_than_days: float, *, batch_size: int = 5000, pause_s: float = 0.05,
          max_batches: int | None = None, on_batch: Callable[[int], object] | None = None) -> int:
    """Delete FINISHED runs finished more than ``older_than_days`` ago; return how many.
    ``on_batch`` is told each batch's count (the CLI's progress bar)."""
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        with control.begin() as conn:
            deleted = conn.execute(queries.PRUNE_FINISHED, {"days": older_than_days, "n": batch_size}).rowcount
        total += deleted
        batches += 1
        if on_batch is not None:
            on_batch(deleted)
        if deleted < batch_size:
            break
        time.sleep(pause_s)  # let other writers in between batches
    with control.begin() as conn:
        conn.execute(queries.PRUNE_REJECTED, {"days": older_than_days})
    return total
