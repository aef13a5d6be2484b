"""Claiming and recording ticks in ``schedule_ticks`` (see :mod:`periodic.models`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from jobcore.db import control_engine


def claim_tick(schedule_name: str, tick_at: datetime, scheduler_id: str, *, catch_up: bool = False) -> int | None:
    """Claim a tick for sending; None if another scheduler (or an earlier pass) has it.
    The unique (schedule_name, tick_at) key makes the claim atomic across processes."""
    with control_engine().begin() as conn:
        return conn.execute(text(
            "INSERT INTO schedule_ticks (schedule_name, tick_at, status, scheduler_id, catch_up) "
            "VALUES (:s, :t, 'CLAIMED', :w, :c) ON CONFLICT (schedule_name, tick_at) DO NOTHING RETURNING id"),
            {"s": schedule_name, "t": tick_at, "w": scheduler_id, "c": catch_up}).scalar()


def mark_enqueued(tick_id: int, message_id: str) -> None:
    """The dispatcher message of a claimed tick was sent; link it to the tick."""
    with control_engine().begin() as conn:
        # The dispatcher may already have run and failed the tick (missing target):
        # never overwrite that with ENQUEUED.
        conn.execute(text("UPDATE schedule_ticks SET enqueued_at = now(), status = CASE WHEN status = 'CLAIMED' "
                          "THEN 'ENQUEUED' ELSE status END WHERE id = :i"), {"i": tick_id})
        conn.execute(text("INSERT INTO schedule_tick_runs (tick_id, message_id, role) VALUES (:i, :m, 'dispatcher') "
                          "ON CONFLICT DO NOTHING"), {"i": tick_id, "m": message_id})


def mark_failed(tick_id: int, error: str) -> None:
    """The tick could not be sent or its dispatcher could not fan out: FAILED, with why."""
    with control_engine().begin() as conn:
        conn.execute(text("UPDATE schedule_ticks SET status = 'FAILED', error = :e WHERE id = :i"),
                     {"i": tick_id, "e": error[:2000]})


def record_missed(schedule_name: str, tick_ats: Iterable[datetime], scheduler_id: str) -> int:
    """Record ticks that were due while no scheduler ran, beyond their grace window."""
    rows = [{"s": schedule_name, "t": t, "w": scheduler_id} for t in tick_ats]
    if not rows:
        return 0
    with control_engine().begin() as conn:
        conn.execute(text("INSERT INTO schedule_ticks (schedule_name, tick_at, status, scheduler_id) "
                          "VALUES (:s, :t, 'MISSED', :w) ON CONFLICT (schedule_name, tick_at) DO NOTHING"), rows)
    return len(rows)


def last_tick_at(schedule_name: str) -> datetime | None:
    with control_engine().connect() as conn:
        return conn.execute(text("SELECT max(tick_at) FROM schedule_ticks WHERE schedule_name = :s"),
                            {"s": schedule_name}).scalar()


def tick_message_ids(tick_id: int) -> set[str]:
    with control_engine().connect() as conn:
        return {r for (r,) in conn.execute(text("SELECT message_id FROM schedule_tick_runs WHERE tick_id = :i"),
                                           {"i": tick_id})}


def record_runs(tick_id: int, message_ids: Iterable[str], role: str) -> None:
    rows = [{"i": tick_id, "m": m, "r": role} for m in message_ids]
    if rows:
        with control_engine().begin() as conn:
            conn.execute(text("INSERT INTO schedule_tick_runs (tick_id, message_id, role) VALUES (:i, :m, :r) "
                              "ON CONFLICT DO NOTHING"), rows)


# -- reads of the operator console -------------------------------------------------------
# The tick that produced a run (its dispatcher run or one of its per-tenant runs).
TICK_OF_MESSAGE = text("""
SELECT t.id, t.schedule_name, t.tick_at, t.status, t.enqueued_at, t.catch_up, t.error, l.role
  FROM schedule_tick_runs l JOIN schedule_ticks t ON t.id = l.tick_id
 WHERE l.message_id = :m
""")

# The last ``:n`` ticks of each named schedule in any status (``uq_schedule_ticks_schedule_tick``
# serves each LATERAL probe), with the outcome of the runs each produced.
RECENT_TICKS = text("""
SELECT s.name AS schedule_name, t.id, t.tick_at, t.status, t.enqueued_at, t.catch_up, t.error,
       count(r.id) AS runs,
       count(r.id) FILTER (WHERE r.resolution = 'COMPLETED') AS completed,
       count(r.id) FILTER (WHERE r.status = 'FINISHED' AND r.resolution <> 'COMPLETED') AS failed,
       count(r.id) FILTER (WHERE r.status <> 'FINISHED') AS open,
       count(l.message_id) - count(r.id) AS unrecorded
  FROM unnest(CAST(:names AS text[])) AS s(name)
 CROSS JOIN LATERAL (
       SELECT id, tick_at, status, enqueued_at, catch_up, error FROM schedule_ticks
        WHERE schedule_name = s.name ORDER BY tick_at DESC LIMIT :n) t
  LEFT JOIN schedule_tick_runs l ON l.tick_id = t.id
  LEFT JOIN job_runs r ON r.message_id = l.message_id
 GROUP BY s.name, t.id, t.tick_at, t.status, t.enqueued_at, t.catch_up, t.error
 ORDER BY s.name, t.tick_at DESC
""")


def tick_of_message(message_id: str) -> dict[str, object] | None:
    """The schedule tick that produced the run of ``message_id`` (None: not scheduled)."""
    with control_engine().connect() as conn:
        row = conn.execute(TICK_OF_MESSAGE, {"m": message_id}).mappings().first()
    return dict(row) if row is not None else None


def recent_ticks(names: list[str], per_schedule: int = 10) -> dict[str, list[dict[str, object]]]:
    """The last ``per_schedule`` ticks of each schedule, newest first, with run outcomes."""
    out: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    if not names:
        return out
    with control_engine().connect() as conn:
        for row in conn.execute(RECENT_TICKS, {"names": names, "n": per_schedule}).mappings():
            out[str(row["schedule_name"])].append(dict(row))
    return out


LAST_TICKS = text("""
SELECT DISTINCT ON (t.schedule_name) t.schedule_name, t.tick_at, t.status,
       (SELECT string_agg(DISTINCT coalesce(j.resolution, j.status), ',')
          FROM schedule_tick_runs r JOIN job_runs j ON j.message_id = r.message_id
         WHERE r.tick_id = t.id) AS outcome
  FROM schedule_ticks t
 ORDER BY t.schedule_name, t.tick_at DESC
""")


def last_ticks() -> dict[str, dict[str, object]]:
    """Per schedule, its newest tick with its status and the outcomes of its runs."""
    with control_engine().connect() as conn:
        return {r["schedule_name"]: dict(r) for r in conn.execute(LAST_TICKS).mappings()}


@dataclass(frozen=True)
class StaleClaim:
    """A tick re-claimed from a scheduler that claimed it and never sent it."""

    id: int
    schedule_name: str
    tick_at: datetime
    catch_up: bool
    # The dispatcher message of a tick links itself when it runs: a linked one was sent
    # (only the ENQUEUED mark was lost), so it must not be sent again.
    sent_message_id: str | None


_RECLAIM = text("""
    UPDATE schedule_ticks t SET claimed_at = now(), scheduler_id = :w, reclaims = t.reclaims + 1
     WHERE t.id IN (SELECT id FROM schedule_ticks
                     WHERE status = 'CLAIMED' AND schedule_name = ANY(CAST(:names AS text[]))
                       AND claimed_at < now() - make_interval(secs => :stale)
                     ORDER BY claimed_at LIMIT :n FOR UPDATE SKIP LOCKED)
       -- re-checked on the locked row: a scheduler that re-claimed it first has moved claimed_at
       AND t.status = 'CLAIMED' AND t.claimed_at < now() - make_interval(secs => :stale)
    RETURNING t.id, t.schedule_name, t.tick_at, t.catch_up,
              (SELECT r.message_id FROM schedule_tick_runs r WHERE r.tick_id = t.id AND r.role = 'dispatcher'
                LIMIT 1) AS sent_message_id
""")


def reclaim_stale_claims(schedule_names: Iterable[str], stale_s: float, scheduler_id: str, *,
                         limit: int = 100) -> list[StaleClaim]:
    """Take over ticks of ``schedule_names`` CLAIMED more than ``stale_s`` ago and still not
    sent (their scheduler died between the claim and the send). Atomic across schedulers:
    each stale tick is re-claimed by one of them, whose claim is then fresh again."""
    names = list(schedule_names)
    if not names:
        return []
    with control_engine().begin() as conn:
        rows = conn.execute(_RECLAIM, {"names": names, "stale": stale_s, "w": scheduler_id, "n": limit}).all()
    return [StaleClaim(r.id, r.schedule_name, r.tick_at, r.catch_up, r.sent_message_id) for r in rows]
