"""docs/seed-failures.md stays true: every promtool test it quotes exists in
metrics/alerts_test.yml, every alert it names exists in metrics/alerts.yml (and every
alert appears in it), and every live test it cites exists."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from tests.support.metrics_tools import ALERTS, ALERTS_TEST, ROOT

pytestmark = pytest.mark.unit

DOC = ROOT / "docs" / "seed-failures.md"


def _alert_names() -> set[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def _promtool_cells(doc: str) -> list[str]:
    """The cells of every table column headed "promtool ..."."""
    cells: list[str] = []
    column = None
    for line in doc.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        row = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if column is None:
            column = next((i for i, c in enumerate(row) if c.startswith("promtool")), -1)
        elif column >= 0 and not set(row[0]) <= {"-"} and column < len(row):
            cells.append(row[column])
    return cells


def test_every_quoted_promtool_test_exists() -> None:
    tests = {t["name"] for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"]}
    cells = _promtool_cells(DOC.read_text())
    assert len(cells) > 30
    quoted = {q for cell in cells for q in re.findall(r'"([^"]+)"', cell)}
    assert len(quoted) > 30
    missing = sorted(q for q in quoted if q not in tests)
    assert not missing, missing


def test_every_alert_is_in_the_table_and_every_named_alert_exists() -> None:
    doc = DOC.read_text()
    alerts = _alert_names()
    assert not sorted(a for a in alerts if not re.search(rf"\b{a}\b", doc))
    words = {"ViewingDR", "ViewingPayment", "AlertName", "PostgreSQL"}  # CamelCase that is no alert
    named = set(re.findall(r"\b([A-Z][a-z]+(?:[A-Z][a-zA-Z]+)+)\b", doc)) - words
    assert not sorted(named - alerts), sorted(named - alerts)


def test_every_cited_live_test_exists() -> None:
    for path, name in re.findall(r"`(test_\w+\.py)::(test_\w+)`", DOC.read_text()):
        tree = ast.parse((ROOT / "tests" / "acceptance" / path).read_text())
        assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, (path, name)
    schedule_test = (ROOT / "tests" / "unit" / "test_alerts_rules.py").read_text()
    assert "def test_every_schedule_pages_or_warns_by_severity" in schedule_test
