"""The exporter stays fast on a 1,000,000-row ledger: every ledger read goes through an index
(slow: building the ledger takes ~20 s; run with ``-m slow``)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.metrics_scrape import exporter, value

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_scrape_stays_fast_on_a_million_runs(broker: Any) -> None:
    from jobcore.db import control_engine

    with control_engine().begin() as conn:
        conn.exec_driver_sql("""
            INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, status, resolution, attempts,
                                  enqueued_at, started_at, finished_at)
            SELECT 'scale' || g, 'actor_' || (mod(g, 40)), 'q' || (mod(g, 5)), mod(g, 50),
                   CASE WHEN mod(g, 1000) = 0 THEN 'PENDING' WHEN mod(g, 1000) = 1 THEN 'STARTED' ELSE 'FINISHED' END,
                   CASE WHEN mod(g, 1000) IN (0, 1) THEN NULL WHEN mod(g, 50) = 2 THEN 'ERROR'
                        WHEN mod(g, 500) = 3 THEN 'EXPIRED' ELSE 'COMPLETED' END,
                   1, now() - make_interval(secs => g * 2.6), now() - make_interval(secs => g * 2.6 - 1),
                   CASE WHEN mod(g, 1000) IN (0, 1) THEN NULL ELSE now() - make_interval(secs => g * 2.6 - 3) END
              FROM generate_series(1, 1000000) g""")
        conn.exec_driver_sql("""
            INSERT INTO job_errors (job_run_id, attempt, exception_type, message, traceback, fingerprint,
                                    will_retry, created_at)
            SELECT id, 1, 'E', 'm', 't', 'f', false, finished_at FROM job_runs WHERE resolution = 'ERROR'""")
    with control_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE job_runs")
        conn.exec_driver_sql("VACUUM ANALYZE job_errors")
    with exporter() as scrape:
        scrape()  # connections warm
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            s = scrape()
            timings.append(time.perf_counter() - started)
    # g % 1000 == 0 implies g % 40 == 0 and g % 5 == 0: all 1000 PENDING runs are actor_0 on q0.
    assert value(s, "jobs_runs_open", queue="q0", actor="actor_0", status="PENDING") == 1000
    assert value(s, "jobs_runs_open", queue="q1", actor="actor_1", status="STARTED") == 1000
    assert value(s, "jobs_exporter_source_seconds", source="ledger") < 0.5
    assert min(timings) < 1.0, timings
