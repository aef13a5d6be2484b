"""Capacity model, measured: what one job costs Redis and PostgreSQL, and where one Redis
primary saturates (docs/scaling.md quotes the numbers this prints).

    nice -n 10 .venv/bin/python -m bench.capacity                 # 10,000 jobs, 10,000-tenant tick
    nice -n 10 .venv/bin/python -m bench.capacity --jobs 2000 --tenants 1000   # quicker

It runs a private ``redis-server`` (AOF on, ``appendfsync everysec``, as in compose) on a
free port and a fresh control database, so every delta is this run's alone:

1. **send**: N ``bench_noop`` jobs through ``send()`` from this process; Redis
   ``INFO commandstats``/``cpu``/``stats`` deltas and ``MEMORY USAGE`` of each key kind,
   per job;
2. **process**: with a ``dramatiq bench.tracked_app -p 2 -t 8`` worker running, N jobs are
   sent again and worked off until the ledger has them FINISHED; Redis deltas minus the
   send's, worker CPU (``/proc``) and PostgreSQL deltas (``pg_stat_database``,
   ``pg_stat_user_tables``) per job;
3. **fan-out**: one tick over T tenants: ``tenancy.fanout.fan_out`` over T tenant rows
   (the tenant list, then ``enqueue_many`` in chunks of 500), best of 3;
4. the tenant connection arithmetic for T tenants (``tenancy.budget``), and the
   saturation point derived from the Redis CPU per job.

Absolute numbers depend on the machine (here: 2 shared cores, everything on one host);
Redis CPU per job is the figure the saturation estimate rests on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG_URL", "postgresql://root@127.0.0.1:5432")
TAG = uuid.uuid4().hex[:6]
DB = f"capacity_{TAG}"
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A private redis-server configured as compose configures it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="capacity-redis-"))
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        self.client = redis.Redis(port=self.port, socket_timeout=30)
        for _ in range(100):
            try:
                self.client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def snapshot(self) -> dict[str, Any]:
        info = self.client.info("all")
        return {"cpu": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
                "in": int(info["total_net_input_bytes"]), "out": int(info["total_net_output_bytes"]),
                "commands": int(info["total_commands_processed"]), "memory": int(info["used_memory"]),
                "stats": {k[len("cmdstat_"):]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def delta(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    calls = {k: (after["stats"].get(k, 0) - before["stats"].get(k, 0)) / n for k in after["stats"]}
    return {"redis_cpu_us_per_job": round((after["cpu"] - before["cpu"]) / n * 1e6, 1),
            "client_commands_per_job": round((after["commands"] - before["commands"]) / n, 2),
            "commandstats_calls_per_job": round(sum(calls.values()), 2),
            "by_command": {k: round(v, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.01},
            "net_in_bytes_per_job": round((after["in"] - before["in"]) / n),
            "net_out_bytes_per_job": round((after["out"] - before["out"]) / n)}


def psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(["psql", f"{PG}/{db}", "-Atqc", sql], check=True, capture_output=True, text=True).stdout


PG_STATS = ("SELECT d.xact_commit, d.tup_inserted, d.tup_updated, d.tup_deleted, d.blks_read + d.blks_hit, "
            "coalesce(t.n_tup_ins, 0), coalesce(t.n_tup_upd, 0), coalesce(t.n_tup_hot_upd, 0) "
            "FROM pg_stat_database d LEFT JOIN pg_stat_user_tables t ON t.relname = 'job_runs' "
            "WHERE d.datname = current_database()")


def pg_snapshot() -> list[int]:
    time.sleep(1.5)  # statistics reach the views about once a second
    return [int(x) for x in psql(PG_STATS, DB).strip().split("|")]


def pg_delta(before: list[int], after: list[int], n: int) -> dict[str, float]:
    names = ("transactions", "rows_inserted", "rows_updated", "rows_deleted", "blocks_touched",
             "job_runs_inserts", "job_runs_updates", "job_runs_hot_updates")
    return {f"{name}_per_job": round((a - b) / n, 3) for name, b, a in zip(names, before, after, strict=True)}


def proc_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK
        except (OSError, IndexError, ValueError):
            continue
    return total


def worker_pids(main: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True).stdout
    return [main, *(int(p) for p in out.split())]


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


def memory_per_job(r: Redis, ns: str, n: int) -> dict[str, float]:
    c = r.client
    keys = {"payloads (queue .msgs hash)": f"{ns}:bench.msgs", "ready list": f"{ns}:bench",
            "ledger stream (PENDING events)": f"{ns}:ledger:events", "ledger runs hash": f"{ns}:ledger:runs"}
    out = {}
    for label, key in keys.items():
        usage = c.memory_usage(key, samples=0) or 0
        out[label] = round(usage / n, 1)
    return out


def finished(n: int) -> bool:
    return int(psql("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'", DB) or 0) >= n


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    n, tenants = args.jobs, args.tenants
    r = Redis()
    ns = f"cap{TAG}"
    env = {"REDIS_URL": r.url, "REDIS_NAMESPACE": ns, "DATABASE_URL": f"{PG}/{DB}", "DEV_ENV": "1",
           "POSTHOG_API_KEY": "", "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    psql(f'DROP DATABASE IF EXISTS "{DB}"')
    psql(f'CREATE DATABASE "{DB}"')
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True, capture_output=True)
    report: dict[str, Any] = {"jobs": n, "tenants": tenants, "machine": f"{os.cpu_count()} cores (shared)"}
    worker = None
    try:
        import jobplatform
        from bench.jobs import declare

        noop = declare(jobplatform.broker)["noop"]
        # 1. send
        r.client.config_resetstat()
        before = r.snapshot()
        t0 = time.perf_counter()
        for _ in range(n):
            noop.send()
        send_s = time.perf_counter() - t0
        after = r.snapshot()
        report["send"] = {**delta(before, after, n), "sends_per_s_one_thread": round(n / send_s),
                          "redis_memory_bytes_per_queued_job": round((after["memory"] - before["memory"]) / n),
                          "memory_usage_per_job": memory_per_job(r, ns, n)}
        # 2. process: start from an empty namespace, start the worker, then send N again and
        # wait until the ledger has them FINISHED; processing = that total minus the send.
        for key in r.client.scan_iter(match=f"{ns}:*", count=1000):
            r.client.delete(key)
        pg0 = pg_snapshot()
        log = Path(tempfile.mkdtemp(prefix="capacity-worker-")) / "worker.log"
        with open(log, "wb") as fh:
            worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "bench.tracked_app", "-p", "2", "-t", "8",
                                       "-Q", "bench"], cwd=ROOT, env={**os.environ, **env}, stdout=fh,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while log.read_text(errors="replace").count("Worker process is ready") < 2:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(log.read_text(errors="replace")[-3000:])
            time.sleep(0.02)
        time.sleep(2.0)  # boot work (heartbeats, first sweeps) out of the measurement
        r.client.config_resetstat()
        before = r.snapshot()
        cpu0 = proc_cpu(worker_pids(worker.pid))
        t0 = time.perf_counter()
        for _ in range(n):
            noop.send()
        while not finished(n):
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        worker_cpu = proc_cpu(worker_pids(worker.pid)) - cpu0
        after = r.snapshot()
        pg1 = pg_snapshot()
        total = delta(before, after, n)
        send = report["send"]
        processing = {k: round(total[k] - send[k], 2) for k in ("redis_cpu_us_per_job", "client_commands_per_job",
                                                                  "commandstats_calls_per_job",
                                                                  "net_in_bytes_per_job", "net_out_bytes_per_job")}
        processing["by_command"] = {k: round(v - send["by_command"].get(k, 0), 2)
                                    for k, v in total["by_command"].items()
                                    if round(v - send["by_command"].get(k, 0), 2) > 0}
        report["send_and_process"] = {**total, "jobs_per_s_sent_and_done": round(n / wall)}
        report["process"] = {**processing,
                             "worker_cpu_ms_per_job": round(worker_cpu / n * 1000, 3),
                             "jobs_per_s_per_worker_core": round(n / worker_cpu) if worker_cpu else None,
                             "finished_marker_bytes_per_job": round(
                                 (r.client.memory_usage(f"{ns}:ledger:finished", samples=0) or 0) / n, 1)}
        # pg deltas over send-drain and processing: everything the ledger wrote for n runs
        report["postgres"] = pg_delta(pg0, pg1, n)
        stop(worker)
        worker = None
        # 3. one tick over `tenants` tenants
        psql(f"INSERT INTO tenants (slug, name, product, database_url) SELECT 'cap-' || g, 'Tenant ' || g, "
             f"'escrow', 'postgresql://x@127.0.0.1:1/t' || g FROM generate_series(1, {tenants}) g", DB)
        from tenancy.fanout import fan_out

        runs = []
        for _ in range(3):
            r.client.config_resetstat()
            before = r.snapshot()
            t0 = time.perf_counter()
            sent = fan_out(noop, product="escrow")  # what a dispatcher does for one tick
            runs.append((time.perf_counter() - t0, before, r.snapshot()))
            if len(sent) != tenants:
                raise RuntimeError(f"fan-out sent {len(sent)} messages for {tenants} tenants")
            r.client.delete(f"{ns}:bench", f"{ns}:bench.msgs", f"{ns}:ledger:runs", f"{ns}:ledger:events")
        best = min(runs, key=lambda x: x[0])
        report["fan_out"] = {"tenants": tenants, "seconds_best_of_3": round(best[0], 3),
                             "all_runs_s": [round(x[0], 3) for x in runs],
                             "redis_cpu_ms": round((best[2]["cpu"] - best[1]["cpu"]) * 1000, 1)}
    finally:
        if worker is not None:
            stop(worker)
        r.stop()
        psql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    # 4. arithmetic
    from jobcore.settings import Settings
    from tenancy.budget import compute

    lru = compute(Settings(dev_env=True), processes=20, threads=8, tenants=tenants)
    pooled = compute(Settings(dev_env=True, tenant_pool_mode="nullpool"), processes=20, threads=8, tenants=tenants)
    report["tenant_connections"] = {"lru (default), 20 processes x 8 threads": lru.describe(),
                                    "nullpool behind PgBouncer": pooled.describe()}
    cpu_us = report["send"]["redis_cpu_us_per_job"] + report["process"]["redis_cpu_us_per_job"]
    report["saturation"] = {"redis_cpu_us_per_job": round(cpu_us, 1),
                            "jobs_per_s_at_100pct_of_one_core": round(1e6 / cpu_us),
                            "jobs_per_s_at_70pct": round(0.7e6 / cpu_us)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
