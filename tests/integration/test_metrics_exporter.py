"""The exporter against real PostgreSQL (migrated control DB) and real Redis, scraped over HTTP."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.metrics_scrape import exporter, names, value
from tests.support.metrics_tenants import escrow_tenants  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def _run(conn: Any, actor: str, queue: str, status: str, resolution: str | None = None, *,
         enqueued_ago: float = 0, started_ago: float | None = None, finished_ago: float | None = None,
         message_id: str | None = None) -> int:
    return conn.execute(text(
        "INSERT INTO job_runs (message_id, actor_name, queue_name, status, resolution, enqueued_at, started_at, "
        "finished_at) VALUES (:m, :a, :q, :s, :r, now() - make_interval(secs => :e), "
        "now() - make_interval(secs => :st), now() - make_interval(secs => :f)) RETURNING id"),
        {"m": message_id or uuid.uuid4().hex, "a": actor, "q": queue, "s": status, "r": resolution,
         "e": enqueued_ago, "st": started_ago, "f": finished_ago}).scalar_one()


def _error(conn: Any, run_id: int, attempt: int, will_retry: bool, ago: float = 5) -> None:
    conn.execute(text(
        "INSERT INTO job_errors (job_run_id, attempt, exception_type, message, traceback, fingerprint, will_retry, "
        "created_at) VALUES (:r, :a, 'ValueError', 'boom', 'Traceback...', 'f', :w, "
        "now() - make_interval(secs => :g))"),
        {"r": run_id, "a": attempt, "w": will_retry, "g": ago})


def test_every_actor_and_schedule_is_zero_filled(broker: Any) -> None:
    from periodic.schedules import all_schedules

    with exporter() as scrape:
        s = scrape()
    assert broker.actors, "the application broker declares actors"
    for name, actor in broker.actors.items():
        q = actor.queue_name
        assert value(s, "jobs_runs_open", queue=q, actor=name, status="PENDING") == 0
        assert value(s, "jobs_oldest_pending_age_seconds", queue=q, actor=name) == 0
        for resolution in ("COMPLETED", "ERROR", "EXPIRED", "REVOKED"):
            assert value(s, "jobs_runs_finished_window", queue=q, actor=name, resolution=resolution) == 0
        assert value(s, "jobs_errors_window", queue=q, actor=name, kind="final") == 0
        assert value(s, "jobs_queue_depth", queue=q, kind="ready") == 0
    for sched in all_schedules():
        assert value(s, "jobs_schedule_last_success_timestamp_seconds", schedule=sched.name) == 0
        assert value(s, "jobs_schedule_grace_seconds", schedule=sched.name) == sched.grace.total_seconds()
        assert value(s, "jobs_schedule_next_expected_timestamp_seconds", schedule=sched.name) > time.time() - 5
        assert [k for k in s if k[0] == "jobs_schedule_info" and ("schedule", sched.name) in k[1]]
    for source in ("ledger", "ticks", "redis", "domain"):
        assert value(s, "jobs_exporter_source_up", source=source) == 1
    assert value(s, "jobs_workers_alive") == 0


def test_labels_carry_ids_only(broker: Any) -> None:
    """Tenant names and personal data never become label values."""
    allowed = {"queue", "actor", "status", "resolution", "kind", "stat", "schedule", "severity", "urgency",
               "source", "process", "tenant_id", "state", "mailbox_id"}
    with exporter() as scrape:
        s = scrape()
    used = {label for _, labels in s for label, _ in labels}
    assert used <= allowed, used - allowed


def test_ledger_aggregates(broker: Any) -> None:
    from jobcore.db import control_engine

    with control_engine().begin() as conn:
        _run(conn, "EXAMPLE", "default", "PENDING", enqueued_ago=700)
        _run(conn, "EXAMPLE", "default", "PENDING", enqueued_ago=30)
        _run(conn, "EXAMPLE", "default", "STARTED", enqueued_ago=50, started_ago=40)
        for _ in range(3):
            _run(conn, "EXAMPLE", "default", "FINISHED", "COMPLETED", enqueued_ago=30, started_ago=20, finished_ago=10)
        failed = _run(conn, "EXAMPLE_ERROR", "default", "FINISHED", "ERROR", enqueued_ago=60, started_ago=40,
                      finished_ago=10)
        _error(conn, failed, 1, True)
        _error(conn, failed, 2, True)
        _error(conn, failed, 3, False)
        old = _run(conn, "EXAMPLE_ERROR", "default", "FINISHED", "ERROR", enqueued_ago=9000, started_ago=8000,
                   finished_ago=7200)  # outside the 10-minute window
        _error(conn, old, 1, False, ago=7200)
        _run(conn, "EXAMPLE", "default", "FINISHED", "EXPIRED", enqueued_ago=4000, finished_ago=5)
        _run(conn, "EXAMPLE", "default", "FINISHED", "REVOKED", enqueued_ago=100, finished_ago=5)
        _run(conn, "not_declared_any_more", "legacy", "PENDING", enqueued_ago=5)
    with exporter() as scrape:
        s = scrape()
    assert value(s, "jobs_runs_open", queue="default", actor="EXAMPLE", status="PENDING") == 2
    assert value(s, "jobs_runs_open", queue="default", actor="EXAMPLE", status="STARTED") == 1
    assert 695 <= value(s, "jobs_oldest_pending_age_seconds", queue="default", actor="EXAMPLE") <= 760
    assert value(s, "jobs_runs_finished_window", queue="default", actor="EXAMPLE", resolution="COMPLETED") == 3
    assert value(s, "jobs_runs_finished_window", queue="default", actor="EXAMPLE", resolution="EXPIRED") == 1
    assert value(s, "jobs_runs_finished_window", queue="default", actor="EXAMPLE", resolution="REVOKED") == 1
    assert value(s, "jobs_runs_finished_window", queue="default", actor="EXAMPLE_ERROR", resolution="ERROR") == 1
    assert value(s, "jobs_errors_window", queue="default", actor="EXAMPLE_ERROR", kind="will_retry") == 2
    assert value(s, "jobs_errors_window", queue="default", actor="EXAMPLE_ERROR", kind="final") == 1
    assert value(s, "jobs_run_duration_window_seconds", queue="default", actor="EXAMPLE", stat="p50") == \
        pytest.approx(10, abs=0.5)
    assert value(s, "jobs_queue_wait_window_seconds", queue="default", actor="EXAMPLE", stat="max") == \
        pytest.approx(10, abs=0.5)
    # A run of an actor no longer declared still shows (no backlog hides behind a rename).
    assert value(s, "jobs_runs_open", queue="legacy", actor="not_declared_any_more", status="PENDING") == 1


def test_redis_queue_depths_and_heartbeats(broker: Any, redis_client: Any) -> None:
    import dramatiq

    ns = broker.namespace

    @dramatiq.actor(broker=broker, queue_name="h6_metrics_q", actor_name="h6_metrics_probe")
    def probe() -> None:  # never consumed in this test
        pass

    for _ in range(3):
        probe.send()
    probe.send_with_options(delay=600_000)
    redis_client.zadd(f"{ns}:h6_metrics_q.XQ", {"dead-1": time.time() * 1000, "dead-2": time.time() * 1000})
    now_ms = time.time() * 1000
    redis_client.zadd(f"{ns}:__heartbeats__", {"w-live-1": now_ms, "w-live-2": now_ms - 500,
                                               "w-dead": now_ms - 3_600_000})
    redis_client.zadd(f"{ns}:platform:schedulers", {"s-live": now_ms})
    with exporter() as scrape:
        s = scrape()
    assert value(s, "jobs_queue_depth", queue="h6_metrics_q", kind="ready") == 3
    assert value(s, "jobs_queue_depth", queue="h6_metrics_q", kind="delayed") == 1
    assert value(s, "jobs_queue_depth", queue="h6_metrics_q", kind="dead") == 2
    assert value(s, "jobs_queue_depth", queue="h6_metrics_q", kind="in_flight") == 0
    # dramatiq's heartbeats also count this (sending) process: 2 workers + this producer.
    assert value(s, "jobs_broker_heartbeats_alive") == 3
    assert value(s, "jobs_workers_source") == 0
    assert value(s, "jobs_workers_alive") == 3
    assert value(s, "jobs_schedulers_alive") == 1
    assert value(s, "jobs_heartbeat_age_seconds", process="worker") < 5
    # With the worker registry present, only registered worker processes count.
    redis_client.zadd(f"{ns}:platform:workers", {"w-live-1": now_ms, "w-dead": now_ms - 3_600_000})
    with exporter() as scrape:
        s = scrape()
    assert value(s, "jobs_workers_source") == 1
    assert value(s, "jobs_workers_alive") == 1


def _tick(conn: Any, schedule: str, tick_at: datetime, status: str) -> int:
    return conn.execute(text(
        "INSERT INTO schedule_ticks (schedule_name, tick_at, status, enqueued_at) VALUES (:s, :t, :st, "
        "CASE WHEN :st = 'ENQUEUED' THEN :t END) RETURNING id"), {"s": schedule, "t": tick_at, "st": status}
    ).scalar_one()


def _link(conn: Any, tick_id: int, message_id: str, role: str) -> None:
    conn.execute(text("INSERT INTO schedule_tick_runs (tick_id, message_id, role) VALUES (:t, :m, :r)"),
                 {"t": tick_id, "m": message_id, "r": role})


def test_schedule_tick_history(broker: Any) -> None:
    from jobcore.db import control_engine
    from periodic.schedules import by_name

    now = datetime.now(UTC).replace(microsecond=0)
    t = [now - timedelta(minutes=m) for m in (50, 40, 30, 20, 10)]
    with control_engine().begin() as conn:
        # report_generation: success at t0, failed tenant run at t1, MISSED at t2, then a running tick at t3
        ok = _tick(conn, "report_generation", t[0], "ENQUEUED")
        for role in ("dispatcher", "tenant"):
            m = uuid.uuid4().hex
            _run(conn, "x", "default", "FINISHED", "COMPLETED", enqueued_ago=3000, started_ago=3000,
                 finished_ago=2990, message_id=m)
            _link(conn, ok, m, role)
        bad = _tick(conn, "report_generation", t[1], "ENQUEUED")
        for role, res in (("dispatcher", "COMPLETED"), ("tenant", "ERROR")):
            m = uuid.uuid4().hex
            _run(conn, "x", "default", "FINISHED", res, enqueued_ago=2400, started_ago=2400, finished_ago=2390,
                 message_id=m)
            _link(conn, bad, m, role)
        _tick(conn, "report_generation", t[2], "MISSED")
        running = _tick(conn, "report_generation", t[3], "ENQUEUED")
        m = uuid.uuid4().hex
        _run(conn, "x", "default", "STARTED", enqueued_ago=1200, started_ago=1190, message_id=m)
        _link(conn, running, m, "dispatcher")
        # aws_status_check: only a FAILED send
        _tick(conn, "aws_status_check", t[4], "FAILED")
    with exporter() as scrape:
        s = scrape()
    rg = {"schedule": "report_generation"}
    assert value(s, "jobs_schedule_last_success_timestamp_seconds", **rg) == t[0].timestamp()
    assert value(s, "jobs_schedule_last_failure_timestamp_seconds", **rg) == t[1].timestamp()
    assert value(s, "jobs_schedule_last_missed_timestamp_seconds", **rg) == t[2].timestamp()
    assert value(s, "jobs_schedule_last_tick_timestamp_seconds", **rg) == t[3].timestamp()
    assert value(s, "jobs_schedule_in_progress", **rg) == 1
    assert 1190 <= value(s, "jobs_schedule_running_seconds", **rg) <= 1260
    assert value(s, "jobs_schedule_max_runtime_seconds", **rg) == 600
    expected_next = by_name("report_generation").cadence.next_after(t[3]).timestamp()
    assert value(s, "jobs_schedule_next_expected_timestamp_seconds", **rg) == expected_next
    assert value(s, "jobs_schedule_info", schedule="report_generation", severity="CRITICAL", urgency="page") == 1
    aws = {"schedule": "aws_status_check"}
    assert value(s, "jobs_schedule_last_failure_timestamp_seconds", **aws) == t[4].timestamp()
    assert value(s, "jobs_schedule_last_success_timestamp_seconds", **aws) == 0
    assert value(s, "jobs_schedule_in_progress", **aws) == 0
    assert value(s, "jobs_schedule_info", schedule="aws_status_check", severity="MEDIUM", urgency="warn") == 1


def test_source_failure_is_reported_not_zero_filled(broker: Any) -> None:
    """Redis unreachable: source_up{redis}=0 and no depth/heartbeat series (zeros would look healthy)."""
    import dataclasses

    with exporter() as scrape:
        # A port nothing listens on: a real connection failure.
        scrape.collector.settings = dataclasses.replace(scrape.collector.settings, redis_url="redis://127.0.0.1:1/0")
        s = scrape()
    assert value(s, "jobs_exporter_source_up", source="redis") == 0
    assert value(s, "jobs_exporter_source_up", source="ledger") == 1
    assert "jobs_workers_alive" not in names(s)
    assert "jobs_queue_depth" not in names(s)


def test_report_queue_and_huntington_batches_per_escrow_tenant(escrow_tenants: Any) -> None:  # noqa: F811
    """Escrow tenant databases (migrated to escrow@head): open report requests and
    non-final Huntington batches/items per tenant id; an unreachable tenant is counted, not hidden."""
    from sqlalchemy import create_engine

    from jobcore.db import normalise_url

    healthy, empty, broken = escrow_tenants(3, down={2})
    engine = create_engine(normalise_url(healthy.database_url))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, email, name, role) VALUES (1, 'a@example.com', 'A', 'ADMIN')"))
        conn.execute(text("INSERT INTO cases (id, number, name) VALUES (1, 'C-1', 'Case')"))
        for age_s, status in ((900, 1), (60, 1), (30, 2), (5000, 3)):
            conn.execute(text("INSERT INTO report_requests (user_id, report_type, status, created_at) "
                              "VALUES (1, 'statement', :s, now() - make_interval(secs => :a))"),
                         {"s": status, "a": age_s})
        for age_s, status in ((3600, "PROCESSING"), (100, "PENDING"), (9000, "COMPLETED"), (9000, "FAILED")):
            conn.execute(text("INSERT INTO huntington_batches (status, created_at, started_at) "
                              "VALUES (:s, now() - make_interval(secs => :a), now() - make_interval(secs => :a))"),
                         {"s": status, "a": age_s})
        conn.execute(text(
            "INSERT INTO huntington_batch_items (batch_id, case_id, kind, amount, beneficiary, account_token, status, "
            "updated_at) VALUES (1, 1, 'ACH', 10, 'b', 'tok', 'UNKNOWN', now() - interval '40 minutes')"))
    engine.dispose()
    with exporter() as scrape:
        s = scrape()
        # The unreachable tenant is not retried on every scrape (each try costs a connect timeout).
        again = scrape()
        assert value(again, "jobs_exporter_tenant_failures") == 1
        assert scrape.collector.tenant_engines.usable(healthy.database_url)
        assert not scrape.collector.tenant_engines.usable(broken.database_url)
    t, e = str(healthy.id), str(empty.id)
    assert value(s, "jobs_report_requests", tenant_id=t, state="pending") == 2
    assert value(s, "jobs_report_requests", tenant_id=t, state="in_progress") == 1
    assert 890 <= value(s, "jobs_report_oldest_age_seconds", tenant_id=t, state="pending") <= 960
    assert value(s, "jobs_huntington_batches_open", tenant_id=t, status="PROCESSING") == 1
    assert value(s, "jobs_huntington_batches_open", tenant_id=t, status="PENDING") == 1
    assert 3590 <= value(s, "jobs_huntington_batch_oldest_age_seconds", tenant_id=t, status="PROCESSING") <= 3660
    assert value(s, "jobs_huntington_items_open", tenant_id=t, status="UNKNOWN") == 1
    assert value(s, "jobs_huntington_item_oldest_age_seconds", tenant_id=t, status="UNKNOWN") >= 2400
    # A tenant with nothing open is zero-filled; the unreachable one is counted, not zero-filled.
    assert value(s, "jobs_report_requests", tenant_id=e, state="pending") == 0
    assert value(s, "jobs_huntington_batches_open", tenant_id=e, status="NEEDS_RECONCILIATION") == 0
    assert value(s, "jobs_exporter_tenant_failures") == 1
    assert not [k for k in s if ("tenant_id", str(broken.id)) in k[1]]
    # Tenant names never appear in the exposition.
    assert not [k for k in s if any("Tenant" in v for _, v in k[1])]
