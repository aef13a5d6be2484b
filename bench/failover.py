"""What a Redis failover loses in the default mode (asynchronous replication), measured.

    nice -n 10 .venv/bin/python -m bench.failover --rounds 5            # REDIS_WAIT_REPLICAS=0
    nice -n 10 .venv/bin/python -m bench.failover --rounds 3 --wait 1   # sends and acks wait for a replica (2 replicas)

Each round: a primary, a replica and three sentinels on loopback (tests/support/redis_ha.py),
a ``dramatiq tests.support.failover_actors -p 2 -t 8`` worker and a producer process
sending ``RECORDED`` jobs at ``--rate`` per second; the primary is SIGKILLed at a random
moment, then comes back as a replica. It reports, per round and in total:

* **lost**: sends that ``send()`` acknowledged and that never finished, even after
  reconciliation (the write died with the primary before the replica or the ledger had it);
* **ran twice**: runs executed more than once (an ack lost with the primary: the job runs
  again), counted in PostgreSQL;
* **reconciled**: runs the ledger knew and Redis had lost, re-enqueued;
* the replication lag sampled on the primary under that load (bytes behind, at most).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG_URL", "postgresql://root@127.0.0.1:5432")
DB = f"failover_{uuid.uuid4().hex[:6]}"


def psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(["psql", f"{PG}/{db}", "-Atqc", sql], check=True, capture_output=True, text=True).stdout


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def one_round(i: int, rate: int, seconds: float, wait_replicas: int, workdir: Path) -> dict[str, Any]:
    from tests.support.redis_ha import SentinelGroup

    ns = f"failover{uuid.uuid4().hex[:8]}"
    psql("TRUNCATE job_runs, job_errors, ledger_cursor, test_job_executions, test_job_effects CASCADE", DB)
    # With WAIT, two replicas: after the switch the promoted one still has a replica to
    # confirm sends (with one, every send raises until the failed node is back).
    group = SentinelGroup(workdir / f"round{i}", "bench-pw", replicas=2 if wait_replicas else 1).start()
    env = {**group.env(), "REDIS_NAMESPACE": ns, "DATABASE_URL": f"{PG}/{DB}", "DEV_ENV": "1", "POSTHOG_API_KEY": "",
           "PYTHONPATH": str(ROOT), "HEARTBEAT_TIMEOUT_MS": "3000", "HEARTBEAT_INTERVAL_MS": "500",
           "SWEEP_INTERVAL_MS": "500", "LEDGER_LEASE_MS": "1000", "RECONCILE_INTERVAL_MS": "3000",
           "RECONCILE_GRACE_MS": "5000", "STUCK_FETCH_GRACE_MS": "3000", "REDIS_WAIT_REPLICAS": str(wait_replicas)}
    log = workdir / f"round{i}-worker.log"
    worker = spawn(["-m", "dramatiq", "tests.support.failover_actors", "-p", "2", "-t", "8"], env, log)
    out = workdir / f"round{i}-acked.jsonl"
    try:
        deadline = time.monotonic() + 60
        while log.read_text(errors="replace").count("Worker process is ready") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(log.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        offset_at_start = int(group.nodes[0].client().info("replication")["master_repl_offset"])
        total = int(rate * seconds)
        producer = spawn(["-m", "tests.support.producer", str(out), str(total), "--rate", str(rate), "--seconds",
                          "0.002"], env, workdir / f"round{i}-producer.log")
        lag: dict[str, Any] = {"max_bytes": 0}
        stop = threading.Event()
        primary, replica = group.nodes[0].client(), group.nodes[1].client()

        def sample() -> None:
            # The replica's processed offset first, then the primary's: the difference is
            # what the replica lacked at that moment (an upper bound: writes in between count).
            while not stop.is_set():
                try:
                    seen = int(replica.info("replication")["slave_repl_offset"])
                    written = int(primary.info("replication")["master_repl_offset"])
                    lag["max_bytes"] = max(lag["max_bytes"], written - seen)
                    lag.setdefault("samples", []).append(written - seen)
                except Exception:
                    return
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(random.uniform(0.3, 0.7) * seconds)
        offset_at_kill = int(primary.info("replication")["master_repl_offset"])
        old = group.primary_port()
        assert old is not None
        group.node(old).kill()
        killed = time.time()
        stop.set()
        while group.primary_port() in (None, old):
            time.sleep(0.05)
        promoted = time.time() - killed
        producer.wait(300)
        group.restart_failed_node(old)  # only after the load: see docs/scaling.md, "Restart of a failed primary"
        acked = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        ids = [a["id"] for a in acked]
        deadline = time.monotonic() + 60
        finished = 0
        while time.monotonic() < deadline:
            finished = int(psql(f"SELECT count(*) FROM job_runs WHERE status = 'FINISHED' AND message_id IN "
                                f"({','.join(repr(m) for m in ids)})", DB) or 0)
            if finished == len(ids):
                break
            time.sleep(1)
        twice = int(psql("SELECT count(*) FROM (SELECT message_id FROM test_job_executions GROUP BY 1 "
                         "HAVING count(*) > 1) d", DB) or 0)
        text = log.read_text(errors="replace")
        reconciled = sum(int(line.split("Reconciliation: ")[1].split()[0]) for line in text.splitlines()
                         if "Reconciliation: " in line)
        before_kill = sum(1 for a in acked if a["at"] < killed)
        repl_bytes = offset_at_kill - offset_at_start
        return {"round": i, "acked": len(ids),
                "replication_bytes_per_job": round(repl_bytes / before_kill) if before_kill else None,
                "lost": len(ids) - finished, "ran_twice": twice,
                "reconciled": reconciled, "lost_writes_detected": text.count("Redis lacks ledger events"),
                "promotion_s": round(promoted, 2), "sends_that_raised": sum(1 for a in acked if a["errors"]),
                "replication_lag_max_bytes": lag["max_bytes"],
                "replication_lag_median_bytes": sorted(lag.get("samples", [0]))[len(lag.get("samples", [0])) // 2]}
    finally:
        kill(worker)
        group.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--wait", type=int, default=0, help="REDIS_WAIT_REPLICAS")
    args = parser.parse_args()
    psql(f'DROP DATABASE IF EXISTS "{DB}"')
    psql(f'CREATE DATABASE "{DB}"')
    os.environ.update({"DATABASE_URL": f"{PG}/{DB}", "DEV_ENV": "1"})
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True, capture_output=True)
    from tests.support.failover_actors import reset_tables

    reset_tables()
    workdir = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    rounds = []
    try:
        for i in range(args.rounds):
            rounds.append(one_round(i, args.rate, args.seconds, args.wait, workdir))
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        from jobcore.db import reset_control_engine

        reset_control_engine()
        psql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    totals = {k: sum(r[k] for r in rounds) for k in ("acked", "lost", "ran_twice", "reconciled",
                                                     "lost_writes_detected", "sends_that_raised")}
    print(json.dumps({"wait_replicas": args.wait, "rate": args.rate, "rounds": len(rounds), **totals,
                      "promotion_s_max": max(r["promotion_s"] for r in rounds),
                      "replication_lag_max_bytes": max(r["replication_lag_max_bytes"] for r in rounds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
