"""The scrape-time collector: reads the ledger, the tick history, Redis and the escrow
tenant databases on every scrape and turns them into metric families.

Every known actor (with its queue), queue, schedule and escrow tenant gets its series
zero-filled, so no alert depends on a series appearing. A source that fails is reported
by ``jobs_exporter_source_up{source}`` = 0 and its series are left out of that scrape
(rather than reported as zeros, which would look healthy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from metrics.catalog import ScheduleSpec, known_actors, known_schedules, urgency
from metrics.domain import TenantEngines, read_domain
from metrics.domain_families import domain_metrics
from metrics.ledger import LedgerSnapshot, read_ledger
from metrics.redis_state import RedisSnapshot, discover_queues, read_redis
from metrics.ticks import ScheduleState, read_ticks

log = logging.getLogger(__name__)

T = TypeVar("T")
RESOLUTIONS = ("COMPLETED", "ERROR", "EXPIRED", "REVOKED")
OPEN_STATUSES = ("PENDING", "STARTED")
DEPTH_KINDS = ("ready", "in_flight", "delayed", "dead")
STATS = ("p50", "p95", "max")
SOURCES = ("ledger", "ticks", "redis", "domain")
DISCOVERY_INTERVAL_S = 60.0


PLATFORM_EVENT_KINDS = ("reconciled", "reconcile_closed", "stuck_fetch_requeued")


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


class JobsCollector(Collector):
    """prometheus-client collector over the platform's state (see module docstring)."""

    def __init__(self, *, window_s: int | None = None, statement_timeout_ms: int = 5000,
                 domain: bool | None = None) -> None:
        from jobcore.settings import get_settings

        self.settings = get_settings()
        self.window_s = window_s or self.settings.exporter_window_s
        self.statement_timeout_ms = statement_timeout_ms
        self.domain_enabled = domain if domain is not None else self.settings.exporter_domain
        self.scheduler_timeout_ms = self.settings.scheduler_heartbeat_timeout_ms
        self.started_at = datetime.now(UTC)
        self.actors = known_actors()
        self.schedules: list[ScheduleSpec] = known_schedules()
        self.tenant_engines = TenantEngines()
        self._lock = threading.Lock()
        self._redis: Any = None
        # Queues found in Redis by SCAN (which walks the whole keyspace): refreshed once a minute.
        self._discovered: set[str] = set()
        self._discovered_at = 0.0

    # -- sources --------------------------------------------------------------------
    def _redis_client(self) -> Any:
        if self._redis is None:
            from jobcore.redis_client import make_client

            # Password, TLS and Sentinel as every other process (after a failover the
            # next scrape's connections go to the new primary); replies bounded to 5 s.
            self._redis = make_client(self.settings, socket_timeout=5)
        return self._redis

    def _timed(self, source: str, fn: Callable[[], T], up: dict[str, float], took: dict[str, float]) -> T | None:
        start = time.perf_counter()
        try:
            value = fn()
            up[source] = 1.0
            return value
        except Exception:
            log.exception("Source %s failed during scrape", source)
            up[source] = 0.0
            return None
        finally:
            took[source] = time.perf_counter() - start

    def _ledger(self) -> LedgerSnapshot:
        from jobcore.db import control_engine

        with control_engine().connect() as conn:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(self.statement_timeout_ms)}")
            return read_ledger(conn, self.window_s, self.settings.redis_namespace)

    def _ticks(self) -> dict[str, ScheduleState]:
        from jobcore.db import control_engine

        with control_engine().connect() as conn:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(self.statement_timeout_ms)}")
            return read_ticks(conn, [s.name for s in self.schedules], stale_s=self.settings.scheduler_claim_stale_s,
                              window_s=self.window_s)

    def _redis_state(self, queues: set[str]) -> RedisSnapshot:
        client = self._redis_client()
        ns = self.settings.redis_namespace
        if time.monotonic() - self._discovered_at > DISCOVERY_INTERVAL_S:
            self._discovered = discover_queues(client, ns)
            self._discovered_at = time.monotonic()
        return read_redis(client, ns, queues | self._discovered,
                          worker_timeout_ms=self.settings.heartbeat_timeout_ms,
                          scheduler_timeout_ms=self.scheduler_timeout_ms)

    # -- collect --------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        with self._lock:  # concurrent scrapes would only double the load
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        up: dict[str, float] = {}
        took: dict[str, float] = {}
        ledger = self._timed("ledger", self._ledger, up, took)
        ticks = self._timed("ticks", self._ticks, up, took)
        queues = set(self.actors.values())
        if ledger is not None:
            queues |= {k[0] for k in ledger.open_counts} | {k[0] for k in ledger.finished}
        redis_snap = self._timed("redis", lambda: self._redis_state(queues), up, took)
        domain = None
        if self.domain_enabled:
            domain = self._timed("domain", lambda: read_domain(self.tenant_engines, self.statement_timeout_ms,
                                                               dr_grace_s=self.settings.dr_overdue_grace_s),
                                 up, took)
        if redis_snap is not None:
            queues |= {q for q, _ in redis_snap.depth}
        if ledger is not None:
            yield from self._ledger_metrics(ledger)
        if redis_snap is not None:
            yield from self._redis_metrics(redis_snap, queues)
        if ticks is not None:
            yield from self._schedule_metrics(ticks)
        if domain is not None:
            yield from domain_metrics(domain)
        active = GaugeMetricFamily("jobs_schedules_active", "1 when production schedules fire here (not DEV_ENV=1 "
                                   "without SCHEDULES_ENABLED=1)")
        active.add_metric([], 1.0 if self.settings.schedules_active else 0.0)
        yield active
        window = GaugeMetricFamily("jobs_window_seconds", "Length of the window of the *_window metrics")
        window.add_metric([], float(self.window_s))
        yield window
        up_f = GaugeMetricFamily("jobs_exporter_source_up", "1 if the source could be read in this scrape",
                                 labels=["source"])
        took_f = GaugeMetricFamily("jobs_exporter_source_seconds", "Time spent reading the source in this scrape",
                                   labels=["source"])
        for source in SOURCES:
            if source in up:
                up_f.add_metric([source], up[source])
                took_f.add_metric([source], took[source])
        yield up_f
        yield took_f

    def _actor_keys(self, *observed: dict[Any, Any]) -> list[tuple[str, str]]:
        """(queue, actor) of every known actor plus any seen in the data."""
        keys = {(q, a) for a, q in self.actors.items()}
        for mapping in observed:
            keys |= {(k[0], k[1]) for k in mapping}
        return sorted(keys)

    def _ledger_metrics(self, s: LedgerSnapshot) -> Iterator[Metric]:
        keys = self._actor_keys(s.open_counts, s.finished, s.errors)
        labels = ["queue", "actor"]
        open_f = GaugeMetricFamily("jobs_runs_open", "Runs in the ledger not yet FINISHED", labels=[*labels, "status"])
        age_f = GaugeMetricFamily("jobs_oldest_pending_age_seconds", "Age of the oldest PENDING run (0 if none)",
                                  labels=labels)
        fin_f = GaugeMetricFamily("jobs_runs_finished_window", "Runs FINISHED in the last window, by resolution",
                                  labels=[*labels, "resolution"])
        err_f = GaugeMetricFamily("jobs_errors_window", "Failed attempts in the last window (will_retry or final)",
                                  labels=[*labels, "kind"])
        dur_f = GaugeMetricFamily("jobs_run_duration_window_seconds", "Run duration (started to finished) of runs "
                                  "finished in the last window", labels=[*labels, "stat"])
        wait_f = GaugeMetricFamily("jobs_queue_wait_window_seconds", "Queue wait (enqueued to started) of runs "
                                   "finished in the last window", labels=[*labels, "stat"])
        for q, a in keys:
            for status in OPEN_STATUSES:
                open_f.add_metric([q, a, status], float(s.open_counts.get((q, a, status), 0)))
            age_f.add_metric([q, a], s.oldest_pending_age.get((q, a), 0.0))
            for resolution in RESOLUTIONS:
                fin_f.add_metric([q, a, resolution], float(s.finished.get((q, a, resolution), 0)))
            for kind in ("will_retry", "final"):
                err_f.add_metric([q, a, kind], float(s.errors.get((q, a, kind), 0)))
            for stat in STATS:
                dur_f.add_metric([q, a, stat], s.duration.get((q, a, stat), 0.0))
                wait_f.add_metric([q, a, stat], s.wait.get((q, a, stat), 0.0))
        dead = GaugeMetricFamily("jobs_ledger_dead_events", "Ledger events PostgreSQL refused, kept in "
                                 "ledger_dead_events (their runs' rows are missing those transitions)")
        dead.add_metric([], float(s.dead_events))
        yield from (open_f, age_f, fin_f, err_f, dur_f, wait_f, dead)

    def _redis_metrics(self, s: RedisSnapshot, queues: set[str]) -> Iterator[Metric]:
        depth = GaugeMetricFamily("jobs_queue_depth", "Messages in Redis per queue: ready, in_flight (fetched, not "
                                  "acked), delayed (.DQ) and dead (.XQ)", labels=["queue", "kind"])
        for q in sorted(queues):
            for kind in DEPTH_KINDS:
                depth.add_metric([q, kind], float(s.depth.get((q, kind), 0)))
        yield depth
        workers = GaugeMetricFamily("jobs_workers_alive", "Worker processes with a heartbeat within the timeout")
        workers.add_metric([], float(s.workers_alive))
        yield workers
        source = GaugeMetricFamily("jobs_workers_source", "1 if jobs_workers_alive comes from the worker registry "
                                   "(platform:workers), 0 if from dramatiq's heartbeats (producers included)")
        source.add_metric([], 1.0 if s.workers_from_registry else 0.0)
        yield source
        ids = GaugeMetricFamily("jobs_broker_heartbeats_alive", "Broker ids (workers and producers) heartbeating "
                                "in dramatiq's __heartbeats__")
        ids.add_metric([], float(s.broker_ids_alive))
        yield ids
        events = CounterMetricFamily("jobs_platform_events", "Reliability interventions: lost runs re-enqueued "
                                     "(reconciled) or closed (reconcile_closed), stuck fetches requeued",
                                     labels=["kind"])
        for kind in PLATFORM_EVENT_KINDS:
            events.add_metric([kind], float(s.platform_events.get(kind, 0)))
        yield events
        buffered = GaugeMetricFamily("jobs_ledger_buffer_events", "Ledger events waiting in Redis for PostgreSQL")
        buffered.add_metric([], float(s.buffer_events))
        yield buffered
        buffer_age = GaugeMetricFamily("jobs_ledger_buffer_oldest_age_seconds",
                                       "Age of the oldest ledger event not yet applied to PostgreSQL")
        buffer_age.add_metric([], s.buffer_oldest_age)
        yield buffer_age
        schedulers = GaugeMetricFamily("jobs_schedulers_alive", "Scheduler processes with a recent heartbeat")
        schedulers.add_metric([], float(s.schedulers_alive))
        yield schedulers
        hb = GaugeMetricFamily("jobs_heartbeat_age_seconds", "Age of the newest heartbeat (+Inf if none)",
                               labels=["process"])
        inf = float("inf")
        hb.add_metric(["worker"], s.newest_worker_heartbeat_age if s.newest_worker_heartbeat_age is not None else inf)
        hb.add_metric(["scheduler"], s.newest_scheduler_heartbeat_age
                      if s.newest_scheduler_heartbeat_age is not None else inf)
        yield hb

    def _schedule_metrics(self, states: dict[str, ScheduleState]) -> Iterator[Metric]:
        now = datetime.now(UTC)
        lbl = ["schedule"]
        info = GaugeMetricFamily("jobs_schedule_info", "Schedule severity (seed) and urgency (page|warn)",
                                 labels=["schedule", "severity", "urgency"])
        fams = {name: GaugeMetricFamily(f"jobs_schedule_{name}", doc, labels=lbl) for name, doc in (
            ("last_tick_timestamp_seconds", "Nominal time of the newest tick in any status (0 if none)"),
            ("last_enqueued_timestamp_seconds", "Nominal time of the newest ENQUEUED tick"),
            ("last_success_timestamp_seconds", "Nominal time of the newest tick whose runs all COMPLETED"),
            ("last_failure_timestamp_seconds", "Nominal time of the newest tick that FAILED to send or whose "
                                               "runs finished ERROR/EXPIRED/REVOKED"),
            ("last_missed_timestamp_seconds", "Nominal time of the newest MISSED tick"),
            ("next_expected_timestamp_seconds", "Next fire time after the newest tick (or after exporter start)"),
            ("grace_seconds", "How late a tick may be before it counts as late"),
            ("max_runtime_seconds", "Longest a tick may run"),
            ("in_progress", "1 while the newest enqueued tick has unfinished runs"),
            ("running_seconds", "How long the oldest unfinished recent tick has been running (0 if none)"),
            ("unsent_ticks", "Ticks CLAIMED more than SCHEDULER_CLAIM_STALE_S ago and never sent (their scheduler "
                             "died between the claim and the send; no live scheduler re-sent them yet)"),
            ("unsent_oldest_seconds", "Time since the oldest unsent claimed tick was claimed (0 if none)"),
            ("resent_ticks_window", "Claimed-but-unsent ticks re-sent by a live scheduler in the last window"),
        )}
        for spec in self.schedules:
            st = states.get(spec.name, ScheduleState())
            name = [spec.name]
            info.add_metric([spec.name, spec.severity, urgency(spec.severity)], 1.0)
            last_tick = max(st.latest.values()) if st.latest else None
            failure = max(filter(None, (st.latest.get("FAILED"), st.last_run_failure)), default=None)
            base = last_tick if last_tick is not None else self.started_at
            try:
                next_expected = _ts(spec.cadence.next_after(base))
            except Exception:
                log.exception("Schedule %s: cannot compute the next fire time", spec.name)
                next_expected = 0.0
            running = (now - st.running_since).total_seconds() if st.running_since is not None else 0.0
            for key, value in (
                ("last_tick_timestamp_seconds", _ts(last_tick)),
                ("last_enqueued_timestamp_seconds", _ts(st.latest.get("ENQUEUED"))),
                ("last_success_timestamp_seconds", _ts(st.last_success)),
                ("last_failure_timestamp_seconds", _ts(failure)),
                ("last_missed_timestamp_seconds", _ts(st.latest.get("MISSED"))),
                ("next_expected_timestamp_seconds", next_expected),
                ("grace_seconds", spec.grace.total_seconds()),
                ("max_runtime_seconds", spec.max_runtime.total_seconds()),
                ("in_progress", 1.0 if st.in_progress else 0.0),
                ("running_seconds", max(0.0, running)),
                ("unsent_ticks", float(st.unsent)),
                ("unsent_oldest_seconds", st.unsent_age),
                ("resent_ticks_window", float(st.resent_window)),
            ):
                fams[key].add_metric(name, value)
        yield info
        yield from fams.values()
