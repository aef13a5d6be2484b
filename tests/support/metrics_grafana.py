"""Reading the Grafana dashboards under test: their PromQL and SQL panel queries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.support.metrics_tools import GRAFANA

DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROM_UID, SQL_UID = "prometheus", "ledger"
METRIC_RE = re.compile(r"\b(jobs_[a-z0-9_]+)\b")
# Grafana SQL macros, replaced by plain SQL to run the queries against the schema.
TIME_FILTER_RE = re.compile(r"\$__timeFilter\(([^)]+)\)")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(datasource uid, panel, target) of every panel target."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            out.append((uid, panel, target))
    return out


def promql(paths: list[Path] = DASHBOARDS) -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr)."""
    return [(p.name, panel["title"], t["expr"]) for p in paths for uid, panel, t in targets(load(p)) if uid == PROM_UID]


def sql(paths: list[Path] = DASHBOARDS) -> list[tuple[str, str, str]]:
    return [(p.name, panel["title"], t["rawSql"]) for p in paths for uid, panel, t in targets(load(p))
            if uid == SQL_UID]


def runnable_sql(raw: str, hours: int = 6) -> str:
    """The panel query with Grafana's macros expanded the way Grafana does for a time range."""
    out = TIME_FILTER_RE.sub(lambda m: f"{m.group(1)} BETWEEN now() - interval '{hours} hours' AND now()", raw)
    assert "$__" not in out, f"unsupported Grafana macro in: {raw}"
    return out
