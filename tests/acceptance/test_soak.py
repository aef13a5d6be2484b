"""Soak: 20,000 jobs through 2 worker processes x 8 threads while a producer process is
still sending (``SOAK_JOBS`` changes the count). Counts executions, not rows."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, TEST_ENV, wait_for
from tests.support.ledger import count

pytestmark = pytest.mark.acceptance

JOBS = int(os.environ.get("SOAK_JOBS", "20000"))

PRODUCER = """
import sys
import jobplatform
from tests.support.effect_actors import counted
n, path = int(sys.argv[1]), sys.argv[2]
ids = [counted.send().message_id for _ in range(n)]
with open(path, "w") as f:
    f.write(" ".join(ids))
"""


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_soak_20k_jobs_with_a_concurrent_producer(broker, start_worker, tmp_path):
    from tests.support.effect_actors import executions_key

    worker = start_worker("tests.support.effect_actors", processes=2, threads=8)
    children = worker.child_pids()
    assert len(children) == 2
    t0 = time.monotonic()
    ids_file = tmp_path / "sent.txt"
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(JOBS), str(ids_file)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)})
    samples: list[tuple[int, list[int]]] = []
    while producer.poll() is None or count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") < JOBS:
        done = count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'")
        samples.append((done, [rss_kb(p) for p in children]))
        assert time.monotonic() - t0 < 600, f"only {done} of {JOBS} done"
        if producer.poll() is not None and producer.returncode != 0:
            break
        time.sleep(1)
    _, err = producer.communicate(timeout=60)
    assert producer.returncode == 0, err[-3000:]
    elapsed = time.monotonic() - t0
    sent = ids_file.read_text().split()
    assert len(sent) == len(set(sent)) == JOBS
    wait_for(lambda: broker.client.hlen(broker.keys.messages("default")) == 0, 30, what="all acked")
    # No lost run, no duplicate row, no double execution.
    assert count("SELECT count(*) FROM job_runs") == JOBS
    assert count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == JOBS
    assert count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:ids)", ids=sent) == JOBS
    executions = broker.client.hgetall(executions_key())
    assert len(executions) == JOBS
    assert {int(v) for v in executions.values()} == {1}
    # Memory flat after warm-up: RSS at the end within 10% of RSS a quarter of the way in.
    quarter = next(rss for done, rss in samples if done >= JOBS // 4)
    final = [rss_kb(p) for p in children]
    for q, f in zip(quarter, final, strict=True):
        assert f <= q * 1.10, (quarter, final)
    print(f"\nsoak: {JOBS} jobs in {elapsed:.1f} s ({JOBS / elapsed:.0f}/s) with the producer sending meanwhile; "
          f"RSS KB at 25%: {quarter}, at end: {final}")
