"""Helpers for the observability tests: external tools (promtool, docker-compose, prometheus)
and the paths of the files under test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METRICS = ROOT / "metrics"
ALERTS = METRICS / "alerts.yml"
ALERTS_TEST = METRICS / "alerts_test.yml"
RUNBOOK = METRICS.parent / "docs" / "runbook.md"  # one section per alert
GRAFANA = ROOT / "grafana"
COMPOSE = ROOT / "docker-compose.yml"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str, package: str) -> str:
    """Path of ``name``; skip locally when missing, fail in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (apt-get install -y {package})"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; the result is returned, not checked."""
    exe = require_tool("promtool", "prometheus")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
