"""Secrets that reach a log line are masked in every process, not only in workers (issue 13,
item 9): the scheduler, the exporter and the CLI, each a real subprocess whose output is
read back. The secret arrives the way it would in production: in the message of an
exception that the process logs with its traceback (tests/support/leaky_schedules.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobcore.redaction import MASK
from tests.conftest import ROOT, TEST_ENV, wait_for
from tests.support.leaky_schedules import SECRETS

pytestmark = pytest.mark.integration

LEAKY = {"EXTRA_SCHEDULES_MODULE": "tests.support.leaky_schedules", "SCHEDULES_ONLY": "test_leaky"}


def assert_masked(output: str, logged: str) -> None:
    """The line that carried the secrets was logged (``logged``), with both masked."""
    assert logged in output, output[-3000:]
    leaked = [s for s in SECRETS if s in output]
    assert not leaked, f"leaked {leaked}:\n{output[-3000:]}"
    assert f"https://feed:{MASK}@status.example" in output and f"password={MASK}" in output, output[-3000:]


def test_the_scheduler_masks_secrets_in_its_log(start_scheduler):
    scheduler = start_scheduler(only="test_leaky", env=LEAKY)
    wait_for(lambda: "Scheduler pass failed" in scheduler.log, 30, what="the scheduler to log the failing cadence")
    assert_masked(scheduler.log, "ConnectionError: status feed")
    assert scheduler.alive()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_exporter_masks_secrets_in_its_log(clean_state, tmp_path: Path):
    port = _free_port()
    log_path = tmp_path / "exporter.log"
    env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), "EXPORTER_DOMAIN": "0", **LEAKY}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "metrics", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=log_file, start_new_session=True)
    try:
        wait_for(lambda: "Exporter listening" in log_path.read_text() or proc.poll() is not None, 60,
                 what="the exporter to listen")
        assert proc.poll() is None, log_path.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            assert resp.status == 200
        wait_for(lambda: "cannot compute the next fire time" in log_path.read_text(), 10, what="the scrape error")
        time.sleep(0.2)  # the traceback follows its line
        assert_masked(log_path.read_text(), "ConnectionError: status feed")
    finally:
        proc.terminate()
        proc.wait(10)


def jobctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), **env}, timeout=60)


def test_the_cli_masks_secrets_in_its_errors(clean_state):
    out = jobctl("schedules", env=LEAKY)
    assert out.returncode == 1
    assert "jobctl schedules failed" in out.stderr
    assert_masked(out.stderr, "ConnectionError: status feed")
    # The one-line operator errors go through the same redactor.
    out = jobctl("run", f"https://ops:{SECRETS[0]}@host/x", env={})
    assert out.returncode == 1 and out.stderr.startswith("error: no run https://ops:")
    assert SECRETS[0] not in out.stderr and MASK in out.stderr
