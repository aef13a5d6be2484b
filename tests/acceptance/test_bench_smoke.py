"""The benchmark script still runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.acceptance


def test_bench_smoke(control_db, redis_url, tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.run", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_LOG_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    for row in ("single `send()` msgs/s", "processing a queued backlog, no-op job, msgs/s", "pickup latency p50, ms",
                "processing while a producer sends", "idle CPU per worker process, %", "Ledger cost per no-op job"):
        assert row in out.stdout, row
