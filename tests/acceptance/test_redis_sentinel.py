"""Redis Sentinel failover under load, with Debian's redis-server and redis-sentinel on
loopback: one primary, one replica, three sentinels (quorum 2), all private processes.

1. While 2,000 jobs flow from a producer process to a 2x8 worker, the primary is
   SIGKILLed. The sentinels promote the replica; the worker, the scheduler and the exporter
   keep working without a restart; sends during the switch raise ``ServiceUnavailable``
   and the producer sends the same message again; every acknowledged run ends COMPLETED
   exactly once, in the ledger and by execution count (kept in PostgreSQL: Redis-side
   counts could be lost with the primary).
2. Writes the replica never received (its replication link frozen) are lost by the
   failover: the drain cursor is ahead of the new primary's stream (the drainer says so
   and keeps new ids above it) and reconciliation re-enqueues the PENDING runs whose
   messages the new primary lacks; each runs once.

Measured recovery times are printed (run with ``-s``) and written to ``$FAILOVER_REPORT``
if set (docs/scaling.md quotes them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import NAMESPACE, ROOT, TEST_ENV, wait_for
from tests.support.chaos import TcpProxy, free_port
from tests.support.ledger import count
from tests.support.redis_ha import SentinelGroup, have, run_module

pytestmark = pytest.mark.acceptance

PASSWORD = "sentinel-test-pw"


@pytest.fixture()
def group(tmp_path: Path):
    from tests.conftest import IN_CI

    if not (have("redis-server") and have("redis-sentinel")):
        if IN_CI:
            pytest.fail("redis-server and redis-sentinel are required in CI (.ci/lib.sh ensure_sentinel_tools)")
        pytest.skip("redis-sentinel not installed")
    made: list[SentinelGroup] = []

    def start(**kwargs: Any) -> SentinelGroup:
        g = SentinelGroup(tmp_path / f"group{len(made)}", PASSWORD, **kwargs)
        made.append(g)
        return g.start()

    yield start
    for g in made:
        g.stop()


def _popen(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), **env},
                                start_new_session=True)


def _scrape(port: int) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    except OSError:
        return None


def _acked(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _report(name: str, numbers: dict[str, Any]) -> None:
    print(f"\n{name}: {json.dumps(numbers, indent=1)}")
    target = os.environ.get("FAILOVER_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps({"test": name, **numbers}) + "\n")


def test_primary_sigkill_under_load_loses_no_acknowledged_run(group, start_worker, start_scheduler, tmp_path):
    from tests.support.failover_actors import reset_tables

    reset_tables()
    g = group()
    # A short stuck-fetch grace: acks that fail during the switch must not look "stuck".
    env = {**g.env(), "RECONCILE_INTERVAL_MS": "3000", "RECONCILE_GRACE_MS": "5000", "STUCK_FETCH_GRACE_MS": "2000"}
    worker = start_worker("tests.support.failover_actors", "tests.support.tenancy_actors", processes=2, threads=8,
                          env=env)
    scheduler = start_scheduler(only="test_every_2s", env=env)
    exporter_port = free_port()
    exporter = _popen(["-m", "metrics", "--port", str(exporter_port)], {**env, "EXPORTER_DOMAIN": "0"},
                      tmp_path / "exporter.log")
    out = tmp_path / "acked.jsonl"
    producer = _popen(["-m", "tests.support.producer", str(out), "2000", "--rate", "200", "--seconds", "0.002"],
                      env, tmp_path / "producer.log")
    try:
        wait_for(lambda: _scrape(exporter_port), 30, what="the exporter")
        wait_for(lambda: len(_acked(out)) >= 500, 60, what="500 acknowledged sends before the kill")
        old = g.primary_port()
        assert old is not None
        g.node(old).kill()
        killed = time.time()
        new = wait_for(lambda: (p := g.primary_port()) not in (None, old) and p, 30, interval=0.05,
                       what="the sentinels to promote the replica")
        promoted = time.time()

        assert producer.wait(180) == 0, (tmp_path / "producer.log").read_text()[-3000:]
        # The failed node comes back (with its AOF) only now: back right after the switch it
        # is a candidate for a second failover if the new primary stalls past
        # down-after-milliseconds, and that one loses what the new primary took since.
        g.restart_failed_node(old)
        acked = _acked(out)
        ids = [a["id"] for a in acked]
        assert len(ids) == len(set(ids)) == 2000

        def finished() -> bool:
            return count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:ids) AND status = 'FINISHED'",
                         ids=ids) == len(ids)
        wait_for(finished, 120, interval=0.5, what="every acknowledged run to finish")
        done_at = time.time()

        with control_engine().connect() as conn:
            resolutions = dict(conn.execute(text(
                "SELECT resolution, count(*) FROM job_runs WHERE message_id = ANY(:ids) GROUP BY 1"),
                {"ids": ids}).all())
            executions = dict(conn.execute(text(
                "SELECT message_id, count(*) FROM test_job_executions GROUP BY 1")).all())
            first_done = conn.execute(text(
                "SELECT extract(epoch FROM min(finished_at)) FROM job_runs WHERE message_id = ANY(:ids)"),
                {"ids": [a["id"] for a in acked if a["at"] > killed]}).scalar_one()
            ticks_after = conn.execute(text(
                "SELECT status, count(*) FROM schedule_ticks WHERE tick_at > to_timestamp(:t) GROUP BY 1"),
                {"t": promoted + 2}).all()
            dispatched_after = count("SELECT count(*) FROM job_runs WHERE actor_name = 'periodic_test_every_2s' "
                                     "AND status = 'FINISHED' AND enqueued_at > to_timestamp(:t)", t=promoted + 2)
        # Exactly once: in the ledger (one COMPLETED row each) and by execution count.
        assert resolutions == {"COMPLETED": 2000}, resolutions
        assert set(executions) == set(ids), "executions of runs nobody acknowledged, or missing ones"
        twice = {m: n for m, n in executions.items() if n != 1}
        assert not twice, f"{len(twice)} runs executed more than once: {list(twice.items())[:5]}"

        # Sends during the switch raised (clearly) and were sent again; those after it succeeded.
        errors = [a for a in acked if a["errors"]]
        assert errors, "no send felt the failover"
        assert all("Redis" in a["error"] and PASSWORD not in a["error"] for a in errors), errors[:3]
        assert sum(1 for a in acked if a["at"] > promoted and not a["errors"]) > 100
        # The scheduler went on sending ticks and the worker ran them; the exporter reads the new primary.
        assert dict(ticks_after).get("ENQUEUED", 0) >= 1, ticks_after
        assert dispatched_after >= 1
        body = wait_for(lambda: (b := _scrape(exporter_port)) and 'source="redis"} 1.0' in b and b, 30,
                        what="an exporter scrape from the new primary")
        assert "jobs_workers_alive 2.0" in body
        # The same processes throughout: none restarted.
        assert worker.alive() and scheduler.alive() and exporter.poll() is None
        cli = run_module("cli", "queues", "--json", env=env)
        assert cli.returncode == 0, cli.stderr
        raw = g.node(new).client()
        wait_for(lambda: g.node(old).client().info("replication")["role"] == "slave", 30,
                 what="the old primary to rejoin as a replica")
        stats = {k.decode(): int(v) for k, v in raw.hgetall(f"{NAMESPACE}:platform:stats").items()}
        _report("sentinel_failover", {
            "promotion_s": round(promoted - killed, 2),
            "first_send_after_kill_s": round(min(a["at"] for a in acked if a["at"] > killed) - killed, 2),
            "first_completion_of_a_post_kill_send_s": round(float(first_done) - killed, 2),
            "sends_that_raised": len(errors), "raises_total": sum(a["errors"] for a in acked),
            "longest_send_s": round(max((b["at"] - a["at"]) for a, b in zip(acked, acked[1:], strict=False)), 2),
            "all_2000_finished_after_kill_s": round(done_at - killed, 1),
            "reconciled": stats.get("reconciled", 0), "stuck_fetch_requeued": stats.get("stuck_fetch_requeued", 0)})
    finally:
        for proc in (producer, exporter):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_writes_the_new_primary_never_received_are_reconciled(group, start_worker, tmp_path):
    """The replica replicates through a proxy that is frozen before the last 20 sends: the
    old primary acknowledges them, a drainer applies their PENDING events, then the
    primary dies and the sentinels promote the replica, which never got them."""
    from tests.support.failover_actors import reset_tables

    reset_tables()
    g = group(replica_proxy=True)
    proxy: TcpProxy = g.proxy  # type: ignore[assignment]
    env = g.env()
    out = tmp_path / "acked.jsonl"
    assert run_module("tests.support.producer", str(out), "20", env=env).returncode == 0
    # A drainer (jobctl syncs the ledger before reading) applies them; the ledger's epoch
    # and the trimmed stream reach the replica too.
    assert run_module("cli", "runs", "--limit", "1", env=env).returncode == 0
    primary, replica = g.nodes[0].client(), g.nodes[1].client()
    wait_for(lambda: replica.info("replication")["master_repl_offset"]
             == primary.info("replication")["master_repl_offset"], 10, what="the replica to catch up")
    proxy.freeze()
    assert run_module("tests.support.producer", str(out), "20", env=env).returncode == 0
    synced = run_module("cli", "runs", "--limit", "1", env=env)  # all 40 PENDING applied
    assert synced.returncode == 0 and not synced.stderr, synced.stderr
    ids = [a["id"] for a in _acked(out)]
    assert count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:ids) AND status = 'PENDING'", ids=ids) == 40
    old = g.primary_port()
    g.node(old).kill()
    killed = time.time()
    wait_for(lambda: g.primary_port() not in (None, old), 30, interval=0.05, what="promotion")
    promoted = time.time()
    worker = start_worker("tests.support.failover_actors",
                          env={**env, "RECONCILE_INTERVAL_MS": "1000", "RECONCILE_GRACE_MS": "2000"})
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:ids) AND resolution = 'COMPLETED'",
                           ids=ids) == 40, 60, interval=0.5, what="all 40 runs, the 20 lost ones re-enqueued")
    recovered = time.time()
    with control_engine().connect() as conn:
        executions = dict(conn.execute(text("SELECT message_id, count(*) FROM test_job_executions GROUP BY 1")).all())
    assert set(executions) == set(ids) and set(executions.values()) == {1}, executions
    new = g.node(g.primary_port() or 0).client()
    assert int(new.hget(f"{NAMESPACE}:platform:stats", "reconciled") or 0) == 20
    assert "Redis lacks ledger events already applied" in worker.log, worker.log[-6000:]
    assert "Reconciliation: 20 lost runs re-enqueued" in worker.log
    _report("lost_writes_reconciled", {"promotion_s": round(promoted - killed, 2),
                                       "lost_runs": 20, "all_completed_after_kill_s": round(recovered - killed, 1)})
