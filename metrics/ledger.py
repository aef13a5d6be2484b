"""Ledger reads at scrape time: every query aggregates in SQL over an index.

* open runs (PENDING/STARTED): the partial index ``ix_job_runs_open`` (queue, actor,
  enqueued_at WHERE status <> 'FINISHED') -- the open set is small in a healthy system;
* finished runs, durations and queue waits of the last window: ``ix_job_runs_finished_at``;
* errors of the last window: ``ix_job_errors_created_at``, joined to job_runs by primary key.

Whole-table counts of finished runs are deliberately not taken: on a large ledger they
cost a full (index) scan per scrape and retention pruning would make them go down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ledger import queries

OPEN_RUNS = text("""
    SELECT queue_name, actor_name, status, count(*) AS n,
           EXTRACT(EPOCH FROM now() - min(enqueued_at)) AS oldest_age
      FROM job_runs
     WHERE status <> 'FINISHED'
     GROUP BY queue_name, actor_name, status
""")

FINISHED_WINDOW = text("""
    SELECT queue_name, actor_name, resolution, count(*) AS n
      FROM job_runs
     WHERE finished_at > now() - make_interval(secs => :window)
     GROUP BY queue_name, actor_name, resolution
""")

# Durations and queue waits of runs that ran (EXPIRED/REVOKED-before-start runs never started).
TIMINGS_WINDOW = text("""
    SELECT queue_name, actor_name,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - started_at)) AS dur_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - started_at)) AS dur_p95,
           max(EXTRACT(EPOCH FROM finished_at - started_at)) AS dur_max,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM started_at - enqueued_at)) AS wait_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM started_at - enqueued_at)) AS wait_p95,
           max(EXTRACT(EPOCH FROM started_at - enqueued_at)) AS wait_max
      FROM job_runs
     WHERE finished_at > now() - make_interval(secs => :window) AND started_at IS NOT NULL
     GROUP BY queue_name, actor_name
""")

ERRORS_WINDOW = text("""
    SELECT r.queue_name, r.actor_name, e.will_retry, count(*) AS n
      FROM job_errors e
      JOIN job_runs r ON r.id = e.job_run_id
     WHERE e.created_at > now() - make_interval(secs => :window)
     GROUP BY r.queue_name, r.actor_name, e.will_retry
""")


@dataclass
class LedgerSnapshot:
    """Rows keyed by (queue, actor, ...)."""

    open_counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    oldest_pending_age: dict[tuple[str, str], float] = field(default_factory=dict)
    finished: dict[tuple[str, str, str], int] = field(default_factory=dict)
    duration: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (queue, actor, stat)
    wait: dict[tuple[str, str, str], float] = field(default_factory=dict)
    errors: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (queue, actor, will_retry|final)
    dead_events: int = 0  # ledger events PostgreSQL refused (ledger_dead_events)


def read_ledger(conn: Connection, window_s: int, namespace: str) -> LedgerSnapshot:
    """Run the ledger aggregates on ``conn``."""
    snap = LedgerSnapshot()
    snap.dead_events = int(conn.execute(queries.DEAD_EVENTS_COUNT, {"ns": namespace}).scalar_one())
    for queue, actor, status, n, oldest in conn.execute(OPEN_RUNS):
        snap.open_counts[(queue, actor, status)] = int(n)
        if status == "PENDING":
            snap.oldest_pending_age[(queue, actor)] = max(0.0, float(oldest or 0))
    for queue, actor, resolution, n in conn.execute(FINISHED_WINDOW, {"window": window_s}):
        snap.finished[(queue, actor, resolution)] = int(n)
    for row in conn.execute(TIMINGS_WINDOW, {"window": window_s}):
        queue, actor = row.queue_name, row.actor_name
        for stat in ("p50", "p95", "max"):
            duration, wait = getattr(row, f"dur_{stat}"), getattr(row, f"wait_{stat}")
            if duration is not None:
                snap.duration[(queue, actor, stat)] = max(0.0, float(duration))
            if wait is not None:
                snap.wait[(queue, actor, stat)] = max(0.0, float(wait))
    for queue, actor, will_retry, n in conn.execute(ERRORS_WINDOW, {"window": window_s}):
        snap.errors[(queue, actor, "will_retry" if will_retry else "final")] = int(n)
    return snap
