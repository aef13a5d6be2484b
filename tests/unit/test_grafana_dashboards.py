"""Grafana provisioning and dashboards (Grafana itself does not run here): the JSON is valid,
every panel uses a provisioned datasource, and every PromQL query parses (promtool)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.metrics_grafana import DASHBOARDS, PROM_UID, SQL_UID, load, promql, sql, targets
from tests.support.metrics_tools import GRAFANA, promtool

pytestmark = pytest.mark.unit


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    titles = {load(p)["title"] for p in DASHBOARDS}
    assert titles == {"Jobs / Overview", "Jobs / Schedules", "Jobs / Runs", "Jobs / Money"}
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


def test_panels_use_provisioned_datasources_and_have_queries() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yml").read_text())
    by_uid = {d["uid"]: d for d in provisioned["datasources"]}
    assert by_uid[PROM_UID]["type"] == "prometheus"
    assert by_uid[SQL_UID]["type"] == "grafana-postgresql-datasource"
    for path in DASHBOARDS:
        dashboard = load(path)
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(set(ids)) == len(ids), path.name
        for uid, panel, target in targets(dashboard):
            assert uid in by_uid, f"{path.name}/{panel['title']}: unknown datasource {uid}"
            assert target.get("expr" if uid == PROM_UID else "rawSql"), f"{path.name}/{panel['title']}: empty query"
    runs = load(GRAFANA / "dashboards/runs.json")
    assert all(uid == SQL_UID for uid, _, _ in targets(runs)), "the Runs dashboard is ledger tables"


def test_datasource_secrets_come_from_the_environment() -> None:
    text = (GRAFANA / "provisioning/datasources/datasources.yml").read_text()
    provisioned = yaml.safe_load(text)
    ledger = next(d for d in provisioned["datasources"] if d["uid"] == SQL_UID)
    assert ledger["secureJsonData"]["password"] == "${LEDGER_DB_PASSWORD}"
    dashboards = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_promql_query_parses(tmp_path: Path) -> None:
    """promtool has no expression checker: each query becomes a recording rule of a
    temporary rules file, which ``promtool check rules`` parses."""
    queries = promql()
    assert len(queries) >= 25
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"grafana:q{i}", "expr": expr} for i, (_, _, expr) in enumerate(queries)]}]}
    (tmp_path / "q.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(tmp_path / "q.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_a_broken_query_is_caught(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum by (queue (jobs_queue_depth)"}]}]}
    (tmp_path / "q.yml").write_text(yaml.safe_dump(rules))
    assert promtool("check", "rules", str(tmp_path / "q.yml")).returncode != 0


def test_sql_panels_exist_for_errors_stuck_runs_and_tenant_failures() -> None:
    titles = {title for _, title, _ in sql()}
    assert {"Recent errors (with traceback)", "Stuck PENDING runs (older than 10 minutes)",
            "Failures per tenant"} <= titles
    recent = next(q for _, t, q in sql() if t == "Recent errors (with traceback)")
    assert "traceback" in recent
