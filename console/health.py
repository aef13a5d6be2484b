"""The overview's data: queues, live processes and the health signals the alert rules
watch, read through the exporter's own readers (``metrics.ledger``, ``metrics.redis_state``,
``metrics.ticks``) and the platform's queue and key modules.

The thresholds are those of ``metrics/alerts.yml`` (a unit test checks that they still
are); a signal here is what the alert's expression evaluates to now, without its
``for:`` duration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobcore.queues import queue_depths
from jobcore.settings import get_settings
from metrics.ledger import LedgerSnapshot, read_ledger
from metrics.redis_state import RedisSnapshot, read_redis
from metrics.ticks import ScheduleState, read_ticks
from periodic.schedules import Schedule, all_schedules

# metrics/alerts.yml
BACKLOG_AGE_S = 600           # JobBacklogAge
BACKLOG_READY = 1000          # JobBacklogCount
ERROR_RATIO = 0.2             # JobErrorSpike
ERROR_MIN = 5                 # JobErrorSpike
LEDGER_BUFFER_AGE_S = 60      # LedgerBufferBacklog
EXPORTER_WINDOW_S = get_settings().exporter_window_s
SCHEDULER_TIMEOUT_MS = get_settings().scheduler_heartbeat_timeout_ms


@dataclass
class Signal:
    """One health signal: ``level`` is ok, warn or bad."""

    name: str
    level: str
    value: str
    detail: str = ""
    link: str | None = None


@dataclass
class ScheduleHealth:
    schedule: Schedule
    state: ScheduleState
    last_tick: datetime | None
    next_expected: datetime | None
    missed: bool
    failed: bool
    late: bool
    stuck: bool

    @property
    def problems(self) -> list[str]:
        return [n for n, on in (("missed", self.missed), ("failed", self.failed), ("late", self.late),
                                ("stuck", self.stuck)) if on]


@dataclass
class Overview:
    queues: list[dict[str, Any]] = field(default_factory=list)
    redis: RedisSnapshot | None = None
    workers: list[tuple[str, float]] = field(default_factory=list)      # (id, seconds since heartbeat)
    schedulers: list[tuple[str, float]] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    schedules_active: bool = True


def schedule_health(states: dict[str, ScheduleState], now: datetime, started: datetime | None = None
                    ) -> list[ScheduleHealth]:
    """Missed, failed, late and stuck, evaluated as the schedule alerts evaluate them."""
    out = []
    for sc in all_schedules():
        st = states.get(sc.name, ScheduleState())
        last_tick = max(st.latest.values()) if st.latest else None
        failure = max(filter(None, (st.latest.get("FAILED"), st.last_run_failure)), default=None)
        success = st.last_success
        missed_at = st.latest.get("MISSED")
        base = last_tick or started
        try:
            next_expected = sc.cadence.next_after(base) if base is not None else None
        except Exception:  # a cadence that cannot say: shown as unknown, never as healthy
            next_expected = None
        late = next_expected is not None and (now - next_expected) > sc.grace
        stuck = st.running_since is not None and (now - st.running_since) > sc.max_runtime
        out.append(ScheduleHealth(sc, st, last_tick, next_expected,
                                  missed=missed_at is not None and (success is None or missed_at > success),
                                  failed=failure is not None and (success is None or failure > success),
                                  late=late, stuck=stuck))
    return out


def _alive(client: Any, key: str, timeout_ms: float) -> list[tuple[str, float]]:
    now_ms = time.time() * 1000
    rows = client.zrangebyscore(key, now_ms - timeout_ms, "+inf", withscores=True)
    return sorted(((m.decode() if isinstance(m, bytes) else str(m), max(0.0, (now_ms - s) / 1000)) for m, s in rows),
                  key=lambda r: r[1])


def read_overview(console: Any) -> Overview:
    """Everything the overview page shows except the charts."""
    s, broker = console.settings, console.broker
    client, keys = broker.client, broker.keys
    ov = Overview(schedules_active=s.schedules_active)
    with console.control().connect() as conn:
        ledger: LedgerSnapshot = read_ledger(conn, EXPORTER_WINDOW_S, s.redis_namespace)
        ticks = read_ticks(conn, [sc.name for sc in all_schedules()])
    depths = queue_depths(client, keys, broker.get_declared_queues())
    oldest: dict[str, float] = {}
    for (queue, _actor), age in ledger.oldest_pending_age.items():
        oldest[queue] = max(oldest.get(queue, 0.0), age)
    ov.redis = read_redis(client, s.redis_namespace, {d["queue"] for d in depths},
                          worker_timeout_ms=s.heartbeat_timeout_ms, scheduler_timeout_ms=SCHEDULER_TIMEOUT_MS)
    for d in depths:
        d["in_flight"] = ov.redis.depth.get((d["queue"], "in_flight"), 0)
        d["oldest_age"] = oldest.get(d["queue"])
    ov.queues = depths
    ov.workers = _alive(client, keys.workers, s.heartbeat_timeout_ms)
    ov.schedulers = _alive(client, keys.schedulers, SCHEDULER_TIMEOUT_MS)
    ov.signals = signals(ov, ledger, schedule_health(ticks, datetime.now(UTC)))
    return ov


def signals(ov: Overview, ledger: LedgerSnapshot, schedules: list[ScheduleHealth]) -> list[Signal]:
    """The alert rules' signals as they stand now."""
    assert ov.redis is not None
    out = []
    worst_age = max((q["oldest_age"] or 0.0 for q in ov.queues), default=0.0)
    aged = [q["queue"] for q in ov.queues if (q["oldest_age"] or 0) > BACKLOG_AGE_S]
    out.append(Signal("Backlog age", "bad" if aged else "ok", _secs(worst_age),
                      f"oldest PENDING run; alert above {BACKLOG_AGE_S // 60} min" + (f": {', '.join(aged)}" if aged
                                                                                      else "")))
    deep = [q["queue"] for q in ov.queues if q["ready"] > BACKLOG_READY]
    out.append(Signal("Backlog size", "bad" if deep else "ok", str(sum(q["ready"] for q in ov.queues)),
                      f"messages ready; alert above {BACKLOG_READY} on a queue" + (f": {', '.join(deep)}" if deep
                                                                                  else "")))
    spiking, worst = [], 0.0
    actors = {(q, a) for q, a, _ in ledger.errors} | {(q, a) for q, a, _ in ledger.finished}
    for q, a in sorted(actors):
        errors = sum(n for (qq, aa, _), n in ledger.errors.items() if (qq, aa) == (q, a))
        finished = sum(n for (qq, aa, _), n in ledger.finished.items() if (qq, aa) == (q, a))
        ratio = errors / max(1, finished + ledger.errors.get((q, a, "will_retry"), 0))
        worst = max(worst, ratio)
        if ratio > ERROR_RATIO and errors >= ERROR_MIN:
            spiking.append(a)
    out.append(Signal("Error ratio", "bad" if spiking else ("warn" if worst > 0 else "ok"), f"{worst:.0%}",
                      f"worst actor, last {EXPORTER_WINDOW_S // 60} min; alert above {ERROR_RATIO:.0%} with "
                      f"≥ {ERROR_MIN} failures" + (f": {', '.join(spiking)}" if spiking else ""),
                      "/errors?window=1h"))
    expired = sum(n for (_, _, res), n in ledger.finished.items() if res == "EXPIRED")
    out.append(Signal("Expired runs", "bad" if expired else "ok", str(expired),
                      f"EXPIRED in the last {EXPORTER_WINDOW_S // 60} min", "/runs?resolution=EXPIRED"))
    out.append(Signal("Workers alive", "bad" if not ov.workers else "ok", str(len(ov.workers)),
                      "worker processes heartbeating"))
    sched_level = "bad" if not ov.schedulers and ov.schedules_active else ("warn" if not ov.schedulers else "ok")
    out.append(Signal("Schedulers alive", sched_level, str(len(ov.schedulers)),
                      "scheduler processes heartbeating" + ("" if ov.schedules_active else
                                                            " (schedules inactive: DEV_ENV=1)")))
    out.append(Signal("Ledger buffer", "bad" if ov.redis.buffer_oldest_age > LEDGER_BUFFER_AGE_S else "ok",
                      _secs(ov.redis.buffer_oldest_age),
                      f"oldest transition waiting for PostgreSQL ({ov.redis.buffer_events} events)"))
    for kind in ("missed", "failed", "late", "stuck"):
        hit = [h.schedule.name for h in schedules if kind in h.problems]
        level = "bad" if hit and ov.schedules_active else ("warn" if hit else "ok")
        out.append(Signal(f"Schedules {kind}", level, str(len(hit)), ", ".join(hit[:6]) + ("…" if len(hit) > 6
                                                                                            else ""),
                          "/schedules"))
    return out


def _secs(v: float) -> str:
    from console.formatting import seconds

    return seconds(v)
