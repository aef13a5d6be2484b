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


def readonly_role() -> str:
    """The role Grafana reads as (LEDGER_READONLY_ROLE; created by control migration h0004r)."""
    from jobcore.settings import get_settings

    return get_settings().ledger_readonly_role


def test_every_metric_named_in_a_panel_or_alert_is_exported(broker: Any) -> None:
    with exporter() as scrape:
        with urllib.request.urlopen(f"http://127.0.0.1:{scrape.port}/metrics", timeout=30) as resp:
            parsed = list(text_string_to_metric_families(resp.read().decode()))
    # Family names and sample names: a counter family "x" is exposed as "x_total".
    families = {f.name for f in parsed} | {s.name for f in parsed for s in f.samples}
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
    # As Grafana reads them: as the read-only role (SET LOCAL: the pooled connection is the
    # owner's again after this transaction).
    with control_engine().begin() as conn:
        conn.exec_driver_sql(f"SET LOCAL ROLE {readonly_role()}")
        assert conn.exec_driver_sql("SELECT current_user").scalar_one() == readonly_role()
        for _dash, title, raw in queries:
            results[title] = conn.execute(text(runnable_sql(raw))).mappings().all()
    # The queries do not merely parse: they find the rows that they are for.
    assert results["Recent errors (with traceback)"][0]["traceback"].startswith("Traceback")
    assert [r["message_id"] for r in results["Stuck PENDING runs (older than 10 minutes)"]] == ["stuck-1"]
    tenant = results["Failures per tenant"]
    assert [(r["tenant_id"], r["actor_name"], r["errors"]) for r in tenant] == [(42, "EXAMPLE_ERROR", 1)]
    assert [r["schedule_name"] for r in results["Missed, failed and skipped ticks"]] == ["report_generation"]


def _as_readonly(statement: str) -> Any:
    from jobcore.db import control_engine

    with control_engine().begin() as conn:
        conn.exec_driver_sql(f"SET LOCAL ROLE {readonly_role()}")
        return conn.exec_driver_sql(statement).all()


def test_the_readonly_role_cannot_read_tenant_database_urls_or_write(broker: Any) -> None:
    """Grafana read as the database owner: every tenant's database URL, password included,
    was one query away."""
    import sqlalchemy.exc

    from jobcore.db import control_engine

    with control_engine().begin() as conn:
        conn.exec_driver_sql("INSERT INTO tenants (slug, name, product, database_url) VALUES "
                             "('acme', 'Acme', 'escrow', 'postgresql://acme:hunter2@db/tenant_acme')")
    assert _as_readonly("SELECT slug, name, product, active, status FROM tenants") == [
        ("acme", "Acme", "escrow", True, "ready")]
    for statement in ("SELECT database_url FROM tenants", "SELECT * FROM tenants",
                      "SELECT provision_error FROM tenants", "SELECT * FROM ledger_dead_events",
                      "INSERT INTO job_runs (message_id, actor_name, queue_name, status) "
                      "VALUES ('m', 'a', 'q', 'PENDING')",
                      "UPDATE tenants SET active = false", "DELETE FROM operator_actions",
                      "CREATE TABLE readonly_probe (id int)"):
        with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"):
            _as_readonly(statement)


def test_the_readonly_step_lets_the_role_log_in_with_its_password(broker: Any, tmp_path: Any) -> None:
    """``python -m jobcore.readonly_role`` (compose's ledger-readonly step) on a database
    migrated with its own role name: LOGIN, a SCRAM verifier (the clear password never sent),
    and the dashboards' tables readable over that login."""
    import os
    import subprocess
    import sys
    import uuid

    import psycopg2

    from tests.conftest import BASE_PG, ROOT, TEST_ENV, admin_execute, create_database, drop_database

    name, role, password = f"jpt_ro_{uuid.uuid4().hex[:8]}", f"jpt_ro_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    url = create_database(name)
    env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "LEDGER_READONLY_ROLE": role}
    try:
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=120)
        step = [sys.executable, "-m", "jobcore.readonly_role"]
        refused = subprocess.run(step, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "LEDGER_READONLY_PASSWORD is empty" in refused.stderr
        done = subprocess.run(step, cwd=ROOT, env={**env, "LEDGER_READONLY_PASSWORD": password},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert password not in done.stdout + done.stderr
        admin = psycopg2.connect(f"{BASE_PG}/postgres")
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s", (role,))
                can_login, verifier = cur.fetchone()
        finally:
            admin.close()
        assert can_login and verifier.startswith("SCRAM-SHA-256$") and password not in verifier
        host = BASE_PG.split("@", 1)[1]
        conn = psycopg2.connect(f"postgresql://{role}:{password}@{host}/{name}")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM job_runs")
                assert cur.fetchone() == (0,)
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute("SELECT database_url FROM tenants")
        finally:
            conn.close()
    finally:
        drop_database(name)
        admin_execute(f'DROP ROLE IF EXISTS "{role}"')
