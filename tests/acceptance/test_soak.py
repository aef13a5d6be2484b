"""Soak: 100,000 jobs through 2 worker processes (slow; run with `-m slow`)."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import wait_for
from tests.support.ledger import count

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

JOBS = int(os.environ.get("SOAK_JOBS", "100000"))


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_soak_100k_jobs(broker, start_worker):
    from actors.examples import example
    from jobcore.bulk import enqueue_many

    worker = start_worker(processes=2, threads=8)
    children = worker.child_pids()
    assert len(children) == 2
    t0 = time.monotonic()
    samples: list[tuple[int, list[int]]] = []
    for start in range(0, JOBS, 10_000):
        enqueue_many(broker, [example.message(i) for i in range(start, min(start + 10_000, JOBS))])
    while True:
        done = count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'")
        samples.append((done, [rss_kb(p) for p in children]))
        if done >= JOBS:
            break
        assert time.monotonic() - t0 < 1500, f"only {done} of {JOBS} done"
        time.sleep(5)
    elapsed = time.monotonic() - t0
    assert count("SELECT count(*) FROM job_runs") == JOBS  # no duplicate rows, nothing lost
    assert count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == JOBS
    assert count("SELECT count(DISTINCT message_id) FROM job_runs") == JOBS
    wait_for(lambda: broker.client.hlen(f"{broker.namespace}:default.msgs") == 0, 30, what="all acked")
    # Memory flat: RSS at the end within 25% (and 30 MB) of RSS a quarter of the way in.
    quarter = next(rss for done, rss in samples if done >= JOBS // 4)
    final = samples[-1][1]
    for q, f in zip(quarter, final, strict=True):
        assert f <= max(q * 1.25, q + 30_000), (quarter, final)
    print(f"\nsoak: {JOBS} jobs in {elapsed:.0f} s ({JOBS / elapsed:.0f}/s); RSS KB at 25%: {quarter}, "
          f"at end: {final}")
