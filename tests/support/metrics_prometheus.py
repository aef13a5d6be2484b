"""A real Prometheus server (Debian package) and the real exporter as processes on loopback,
for the live alert acceptance test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.metrics_tools import ALERTS, ROOT, require_tool
from tests.support.processes import terminate

# The live test cannot wait 10 minutes for a backlog: these thresholds (and every `for:`)
# are shortened for it; the expressions are otherwise the production ones.
TEST_THRESHOLDS = {
    "JobBacklogAge": ("> 600", "> 5"),
    "JobBacklogCount": ("> 1000", "> 20"),
}
TEST_FOR = "2s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shortened_rules(path: Path) -> Path:
    """alerts.yml with the short thresholds above; returns the written path."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            old_new = TEST_THRESHOLDS.get(rule["alert"])
            if old_new:
                assert old_new[0] in rule["expr"], rule["alert"]
                rule["expr"] = rule["expr"].replace(*old_new)
            rule["for"] = TEST_FOR
    path.write_text(yaml.safe_dump(rules))
    return path


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read().decode())


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.proc)


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> Proc:
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Proc(proc, log_path)


def wait_http(url: str, timeout: float, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.proc.poll() is not None:
            raise AssertionError(f"process exited:\n{proc.log[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not up after {timeout}s:\n{proc.log[-3000:]}")
        time.sleep(0.2)


@pytest.fixture()
def start_exporter(clean_state: None, tmp_path: Path) -> Iterator[Callable[..., tuple[Proc, int]]]:
    """Factory: ``python -m metrics`` as a subprocess on an ephemeral port."""
    from tests.conftest import TEST_ENV

    started: list[Proc] = []

    def start(env: dict[str, str] | None = None) -> tuple[Proc, int]:
        port = free_port()
        full = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), "EXPORTER_PORT": str(port), **(env or {})}
        proc = _spawn([sys.executable, "-m", "metrics"], tmp_path / f"exporter-{len(started)}.log", full)
        started.append(proc)
        wait_http(f"http://127.0.0.1:{port}/metrics", 60, proc)
        return proc, port

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture()
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., tuple[Proc, str]]]:
    """Factory: the Debian ``prometheus`` server scraping ``target`` every second and
    evaluating ``rules`` every second; returns (process, base URL)."""
    exe = require_tool("prometheus", "prometheus")
    started: list[Proc] = []

    def start(target: str, rules: Path) -> tuple[Proc, str]:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "jobs-exporter", "static_configs": [{"targets": [target]}]}],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        check = subprocess.run([require_tool("promtool", "prometheus"), "check", "config", str(config_path)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        proc = _spawn([exe, f"--config.file={config_path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                       f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "prometheus.log", dict(os.environ))
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/-/ready", 60, proc)
        return proc, url

    yield start
    for proc in started:
        proc.stop()


def alerts(url: str) -> list[dict[str, Any]]:
    return list(get_json(f"{url}/api/v1/alerts")["data"]["alerts"])


def query(url: str, expr: str) -> list[dict[str, Any]]:
    from urllib.parse import quote

    return list(get_json(f"{url}/api/v1/query?query={quote(expr)}")["data"]["result"])
