"""Schedule tick history reads (``schedule_ticks`` and ``schedule_tick_runs``).

Per schedule and status, the latest tick comes from the index
``ix_schedule_ticks_schedule_status`` (schedule_name, status, tick_at) with one
``ORDER BY tick_at DESC LIMIT 1`` probe per pair (a LATERAL join), so the cost does not
grow with the history. The outcome of the last ``RECENT_TICKS`` enqueued ticks is taken
from the runs they produced (dispatcher and per-tenant runs, linked by message_id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

TICK_STATUSES = ("CLAIMED", "ENQUEUED", "MISSED", "SKIPPED", "FAILED")
RECENT_TICKS = 20

LATEST_BY_STATUS = text("""
    SELECT s.name, st.status, t.tick_at
      FROM unnest(CAST(:names AS text[])) AS s(name)
     CROSS JOIN unnest(CAST(:statuses AS text[])) AS st(status)
     CROSS JOIN LATERAL (
           SELECT tick_at FROM schedule_ticks
            WHERE schedule_name = s.name AND status = st.status
            ORDER BY tick_at DESC LIMIT 1) t
""")

RECENT_OUTCOMES = text("""
    SELECT s.name, t.tick_at, t.enqueued_at,
           count(r.id) AS runs,
           count(r.id) FILTER (WHERE r.status = 'FINISHED' AND r.resolution = 'COMPLETED') AS completed,
           count(r.id) FILTER (WHERE r.status = 'FINISHED' AND r.resolution <> 'COMPLETED') AS failed,
           count(r.id) FILTER (WHERE r.status <> 'FINISHED') AS open,
           count(l.message_id) - count(r.id) AS unrecorded
      FROM unnest(CAST(:names AS text[])) AS s(name)
     CROSS JOIN LATERAL (
           SELECT id, tick_at, enqueued_at FROM schedule_ticks
            WHERE schedule_name = s.name AND status = 'ENQUEUED'
            ORDER BY tick_at DESC LIMIT :recent) t
      LEFT JOIN schedule_tick_runs l ON l.tick_id = t.id
      LEFT JOIN job_runs r ON r.message_id = l.message_id
     GROUP BY s.name, t.id, t.tick_at, t.enqueued_at
""").bindparams(bindparam("recent"))


# Ticks CLAIMED longer than the stale bound (their scheduler died before sending them,
# and no live scheduler has re-sent them yet), and ticks re-sent in the window; both from
# partial indexes (ix_schedule_ticks_claimed, ix_schedule_ticks_reclaimed).
UNSENT = text("""
    SELECT schedule_name, count(*), EXTRACT(EPOCH FROM now() - min(claimed_at)) FROM schedule_ticks
     WHERE status = 'CLAIMED' AND claimed_at < now() - make_interval(secs => :stale)
       AND schedule_name = ANY(CAST(:names AS text[]))
     GROUP BY schedule_name
""")
RESENT = text("""
    SELECT schedule_name, count(*) FROM schedule_ticks
     WHERE reclaims > 0 AND claimed_at > now() - make_interval(secs => :window)
       AND schedule_name = ANY(CAST(:names AS text[]))
     GROUP BY schedule_name
""")


@dataclass
class ScheduleState:
    latest: dict[str, datetime] = field(default_factory=dict)  # status -> latest tick_at
    last_success: datetime | None = None
    last_run_failure: datetime | None = None
    in_progress: bool = False
    running_since: datetime | None = None
    unsent: int = 0             # claimed longer than the stale bound ago, never sent
    unsent_age: float = 0.0     # seconds since the oldest of them was claimed
    resent_window: int = 0      # stale claims re-sent by a live scheduler in the window


def read_ticks(conn: Connection, names: list[str], *, stale_s: float = 60.0, window_s: float = 600.0
               ) -> dict[str, ScheduleState]:
    """State of every named schedule (schedules without any tick get an empty state)."""
    states = {name: ScheduleState() for name in names}
    if not names:
        return states
    for name, n, age in conn.execute(UNSENT, {"names": names, "stale": stale_s}):
        states[name].unsent, states[name].unsent_age = int(n), float(age or 0)
    for name, n in conn.execute(RESENT, {"names": names, "window": window_s}):
        states[name].resent_window = int(n)
    for name, status, tick_at in conn.execute(LATEST_BY_STATUS, {"names": names, "statuses": list(TICK_STATUSES)}):
        states[name].latest[status] = tick_at
    rows = conn.execute(RECENT_OUTCOMES, {"names": names, "recent": RECENT_TICKS}).all()
    newest_enqueued: dict[str, datetime] = {}
    for name, tick_at, *_ in rows:
        newest_enqueued[name] = max(newest_enqueued.get(name, tick_at), tick_at)
    for name, tick_at, enqueued_at, runs, completed, failed, open_, unrecorded in rows:
        state = states[name]
        if failed:
            state.last_run_failure = max(filter(None, (state.last_run_failure, tick_at)))
        elif runs and completed == runs and not unrecorded:
            state.last_success = max(filter(None, (state.last_success, tick_at)))
        if open_ or (runs == 0 and unrecorded):
            # A tick whose runs are not all finished (or not yet in the ledger) is running;
            # the oldest such tick tells how long the schedule has been busy.
            started = enqueued_at or tick_at
            state.running_since = min(filter(None, (state.running_since, started)))
            # in_progress: the newest enqueued tick has not finished yet.
            state.in_progress = state.in_progress or tick_at == newest_enqueued[name]
    return states
