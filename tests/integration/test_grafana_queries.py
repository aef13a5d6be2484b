"""Grafana panel queries against the real system: every metric a PromQL panel names is exported
by the exporter, and every SQL panel query runs against the migrated control schema."""

from __future__ import annotations

import urllib.request
import uuid
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.support.metrics_grafana import METRIC_RE, promql, runnable_sql, sql
from tests.support.metrics_scrape import exporter
from tests.support.metrics_tools import ALERTS

pytestmark = pytest.mark.integration


def test_every_metric_named_in_a_panel_or_alert_is_exported(broker: Any) -> None:
    with exporter() as scrape:
        with urllib.request.urlopen(f"http://127.0.0.1:{scrape.port}/metrics", timeout=30) as resp:
            families = {f.name for f in text_string_to_metric_families(resp.read().decode())}
    named = {(m, dash, title) for dash, title, expr in promql() for m in METRIC_RE.findall(expr)}
    # The alert rules too: an alert on a metric that is never exported could never fire.
    rules = yaml.safe_load(ALERTS.read_text())
    named |= {(m, "alerts.yml", r["alert"]) for g in rules["groups"] for r in g["rules"]
              for m in METRIC_RE.findall(r["expr"])}
    missing = sorted(f"{dash}/{title}: {m}" for m, dash, title in named if m not in families)
    assert not missing, missing
    assert len({m for m, _, _ in named}) >= 25


def test_every_sql_panel_query_runs_against_the_migrated_schema(broker: Any) -> None:
    from jobcore.db import control_engine

    with control_engine().begin() as conn:
        run_id = conn.execute(text(
            "INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, status, resolution, enqueued_at, "
            "started_at, finished_at) VALUES (:m, 'EXAMPLE_ERROR', 'default', 42, 'FINISHED', 'ERROR', "
            "now() - interval '1 hour', now() - interval '1 hour', now() - interval '50 minutes') RETURNING id"),
            {"m": uuid.uuid4().hex}).scalar_one()
        conn.execute(text(
            "INSERT INTO job_errors (job_run_id, attempt, exception_type, message, traceback, fingerprint, will_retry)"
            " VALUES (:r, 1, 'ValueError', 'boom', 'Traceback (most recent call last): ...', 'fp', false)"),
            {"r": run_id})
        conn.execute(text(
            "INSERT INTO job_runs (message_id, actor_name, queue_name, status, enqueued_at) "
            "VALUES (:m, 'EXAMPLE', 'default', 'PENDING', now() - interval '30 minutes')"), {"m": "stuck-1"})
        conn.execute(text("INSERT INTO schedule_ticks (schedule_name, tick_at, status) "
                          "VALUES ('report_generation', now() - interval '5 minutes', 'MISSED')"))
    queries = sql()
    assert len(queries) >= 7
    results = {}
    with control_engine().connect() as conn:
        for _dash, title, raw in queries:
            results[title] = conn.execute(text(runnable_sql(raw))).mappings().all()
    # The queries do not merely parse: they find the rows that they are for.
    assert results["Recent errors (with traceback)"][0]["traceback"].startswith("Traceback")
    assert [r["message_id"] for r in results["Stuck PENDING runs (older than 10 minutes)"]] == ["stuck-1"]
    tenant = results["Failures per tenant"]
    assert [(r["tenant_id"], r["actor_name"], r["errors"]) for r in tenant] == [(42, "EXAMPLE_ERROR", 1)]
    assert [r["schedule_name"] for r in results["Missed, failed and skipped ticks"]] == ["report_generation"]
