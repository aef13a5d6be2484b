"""Alerts end to end: a real Prometheus scrapes the real exporter while a real worker and the
real scheduler run. Healthy: no alert is pending or firing. Then an error spike, a backlog and
a missed schedule: each alert reaches ``firing`` in Prometheus's /api/v1/alerts.

Shortened for the test (tests/support/metrics_prometheus.py): scrape and evaluation every 1 s,
every ``for:`` 2 s, backlog thresholds 5 s / 20 messages; a 5-second schedule with 1 s grace."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for

# Fixtures of this area are imported (tests/conftest.py is the lead's): ruff sees parameters redefining them.
# ruff: noqa: F811
from tests.support.metrics_prometheus import (  # noqa: F401
    alerts,
    query,
    shortened_rules,
    start_exporter,
    start_prometheus,
)

pytestmark = pytest.mark.acceptance

SCHEDULE = "test_every_5s_short_grace"  # EverySeconds(5), grace 1 s, HIGH


def firing(url: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in alerts(url):
        if a["state"] == "firing":
            out.setdefault(a["labels"]["alertname"], []).append(a["labels"])
    return out


def test_alerts_fire_on_faults_and_stay_quiet_when_healthy(
        broker: Any, start_worker: Any, start_scheduler: Any, start_exporter: Any, start_prometheus: Any,
        tmp_path: Path) -> None:
    import jobplatform  # noqa: F401 - declares the actors on the test broker

    # The test schedules fan out to TENANT_PROBE (declared in tests.support.tenancy_actors).
    worker = start_worker("tests.support.tenancy_actors")
    scheduler = start_scheduler(only=SCHEDULE)
    # The exporter gets the scheduler's environment, as in docker-compose.yml.
    _, port = start_exporter(env={"SCHEDULES_ONLY": SCHEDULE, "SCHEDULES_ENABLED": "1"})
    _, prom = start_prometheus(f"127.0.0.1:{port}", shortened_rules(tmp_path / "rules.yml"))

    # --- healthy phase ------------------------------------------------------------------
    example = broker.get_actor("EXAMPLE")
    for i in range(5):
        example.send(i)
    wait_for(lambda: query(prom, 'up{job="jobs-exporter"} == 1'), 30, what="exporter scraped")
    wait_for(lambda: query(prom, f'jobs_schedule_last_success_timestamp_seconds{{schedule="{SCHEDULE}"}} > 0'), 30,
             what="a successful tick seen by Prometheus")
    wait_for(lambda: query(prom, 'sum(jobs_runs_finished_window{actor="EXAMPLE",resolution="COMPLETED"}) >= 5'),
             30, what="example jobs completed")
    # Before the first scrape ExporterDown (absent target) may be active; it must clear...
    wait_for(lambda: alerts(prom) == [], 15, interval=0.5, what="start-up alerts to resolve")
    for _ in range(10):  # ...and then 10 s of 1 s evaluations: nothing pending, nothing firing
        active = alerts(prom)
        assert active == [], active
        time.sleep(1)

    # --- faults -------------------------------------------------------------------------
    # Nobody consumes the periodic queue any more: dispatchers pile up (backlog) and no tick
    # can succeed after the miss below.
    worker.terminate()
    start_worker("tests.support.tenancy_actors", queues=["default"])
    error = broker.get_actor("EXAMPLE_ERROR")
    for _ in range(8):
        error.send()
    dispatcher = broker.get_actor("periodic_test_every_2s")
    for _ in range(25):
        dispatcher.send()
    # The scheduler is frozen across at least one tick; when it resumes it records the
    # ticks older than the 1 s grace as MISSED.
    os.kill(scheduler.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(7)
    finally:
        os.kill(scheduler.proc.pid, signal.SIGCONT)

    wanted = {"JobErrorSpike", "JobBacklogAge", "JobBacklogCount", "ScheduleMissed"}
    last: dict[str, Any] = {}

    def all_firing() -> dict[str, list[dict[str, Any]]] | None:
        last["firing"] = firing(prom)
        return last["firing"] if wanted <= set(last["firing"]) else None

    try:
        seen = wait_for(all_firing, 60, interval=0.5, what=f"{sorted(wanted)} firing")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; firing at the end: {sorted(last.get('firing', {}))}, "
                             f"all active: {alerts(prom)}") from None
    assert {"actor": "EXAMPLE_ERROR", "queue": "default"}.items() <= seen["JobErrorSpike"][0].items()
    assert any(labels["queue"] == "periodic" for labels in seen["JobBacklogAge"])
    assert any(labels["queue"] == "periodic" for labels in seen["JobBacklogCount"])
    missed = [labels for labels in seen["ScheduleMissed"] if labels["schedule"] == SCHEDULE]
    assert missed and missed[0]["severity"] == "HIGH" and missed[0]["urgency"] == "page"
    assert "WorkersDown" not in seen
