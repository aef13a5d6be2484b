"""Benchmark: plain dramatiq vs the tracked platform, interleaved, medians of N repetitions.

    .venv/bin/python -m bench.run            # full run (several minutes), writes bench/RESULTS.md
    .venv/bin/python -m bench.run --smoke    # tiny sizes, proves the script works (CI)

Two systems use the same Redis, the same job bodies (bench/jobs.py) and the same worker
command shape (``dramatiq <app> -p 2 -t 8``): plain dramatiq (its RedisBroker and default
middleware, no ledger) and the platform in its default configuration (full middleware
stack, the Redis-stream ledger drained to PostgreSQL). Only ratios measured in this one
run are meaningful; absolute numbers vary with the machine's load. A platform processing
run counts as done when the ledger in PostgreSQL holds every run FINISHED.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG_URL", "postgresql://root@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
TAG = uuid.uuid4().hex[:6]
DB = f"bench_{TAG}"
ENV = {
    "REDIS_URL": REDIS_URL,
    "REDIS_NAMESPACE": f"bench-tracked-{TAG}",
    "BENCH_PLAIN_NAMESPACE": f"bench-plain-{TAG}",
    "DATABASE_URL": f"{PG}/{DB}",
    "BENCH_LATENCY_KEY": f"bench-latency-{TAG}",
    "POSTHOG_API_KEY": "",
    "DEV_ENV": "1",
    "PYTHONPATH": str(ROOT),
}
os.environ.update(ENV)


@dataclass
class Sizes:
    send: int = 3000
    bulk: tuple[int, ...] = (1000, 10_000)
    noop: int = 20_000
    sleep: int = 4000
    concurrent: int = 10_000
    latency: int = 200
    reps: int = 3
    idle_s: float = 10.0
    scrape_rows: int = 1_000_000


SMOKE = Sizes(send=200, bulk=(100, 500), noop=500, sleep=200, concurrent=300, latency=20, reps=1, idle_s=2.0,
              scrape_rows=10_000)


@dataclass
class System:
    name: str
    app: str
    broker: Any
    actors: dict[str, Any]
    tracked: bool
    results: dict[str, list[float]] = field(default_factory=dict)

    def record(self, key: str, value: float) -> None:
        self.results.setdefault(key, []).append(value)

    @property
    def namespace(self) -> str:
        return str(self.broker.namespace)


def psql(sql: str, db: str = "postgres") -> str:
    return subprocess.run(["psql", f"{PG}/{db}", "-Atqc", sql], check=True, capture_output=True, text=True).stdout


def setup_db() -> None:
    psql(f'DROP DATABASE IF EXISTS "{DB}"')
    psql(f'CREATE DATABASE "{DB}"')
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True, capture_output=True)


def flush(system: System) -> None:
    client = system.broker.client
    keys = list(client.scan_iter(match=f"{system.namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.delete(ENV["BENCH_LATENCY_KEY"])
    if system.tracked:
        psql("TRUNCATE job_runs, job_errors, rejected_messages, ledger_cursor RESTART IDENTITY CASCADE", DB)


class Worker:
    def __init__(self, system: System, log: Path) -> None:
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dramatiq", system.app, "-p", "2", "-t", "8", "-Q", "bench"],
                cwd=ROOT, env={**os.environ, **ENV}, stdout=fh,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while log.read_text(errors="replace").count("Worker process is ready") < 2:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_send(system: System, n: int) -> None:
    actor = system.actors["noop"]
    flush(system)
    elapsed = timed(lambda: [actor.send() for _ in range(n)])
    system.record("send_msgs_per_s", n / elapsed)


def bench_bulk(system: System, n: int) -> None:
    actor = system.actors["noop"]
    flush(system)
    messages = [actor.message() for _ in range(n)]
    if system.tracked:
        elapsed = timed(lambda: system.broker.enqueue_many(messages))
        _sync()
        pending = int(psql("SELECT count(*) FROM job_runs WHERE status = 'PENDING'", DB))
        if pending != n:
            raise RuntimeError(f"bulk enqueue: {pending} PENDING rows for {n} messages")
    else:
        elapsed = timed(lambda: [system.broker.enqueue(m) for m in messages])
    system.record(f"bulk_{n}_msgs_per_s", n / elapsed)


def wait_done(system: System, n: int, timeout: float = 600) -> None:
    """Wait until every message is acked and, for the platform, every run is FINISHED in
    the ledger (redis mode applies its buffer shortly after the ack). The ledger is read
    over one kept connection, cheaply: the measurement must not load the machine."""
    client = system.broker.client
    msgs = f"{system.namespace}:bench.msgs"
    deadline = time.monotonic() + timeout
    while client.hlen(msgs) and time.monotonic() < deadline:
        time.sleep(0.005)
    if client.hlen(msgs):
        raise RuntimeError(f"{system.name}: {n} jobs not done in {timeout}s")
    if not system.tracked:
        return
    import psycopg2

    conn = psycopg2.connect(ENV["DATABASE_URL"])
    conn.autocommit = True
    try:
        cur = conn.cursor()
        while True:
            cur.execute("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'")
            row = cur.fetchone()
            finished = int(row[0]) if row else 0
            if finished >= n:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system.name}: all {n} messages acked but only {finished} runs FINISHED")
            time.sleep(0.005)
    finally:
        conn.close()


def bench_processing(system: System, kind: str, n: int, logdir: Path) -> dict[str, int]:
    """Pre-fill the queue with ``n`` jobs, start the workers, time until all are done."""
    flush(system)
    actor = system.actors[kind]
    messages = [actor.message() for _ in range(n)]
    if system.tracked:
        system.broker.enqueue_many(messages)
        _sync()
    else:
        for m in messages:
            system.broker.enqueue(m)
    if system.tracked:
        time.sleep(1.5)  # PostgreSQL publishes its counters lazily: let the prefill's inserts land first
    stats_before = pg_stats() if system.tracked else {}
    worker = Worker(system, logdir / f"{system.name}-{kind}.log")
    try:
        client = system.broker.client
        qkey = f"{system.namespace}:bench"
        while client.llen(qkey) >= n:  # the clock starts when the first job is taken
            time.sleep(0.001)
        elapsed = timed(lambda: wait_done(system, n))
    finally:
        worker.stop()
    system.record(f"process_{kind}_msgs_per_s", n / elapsed)
    if system.tracked:
        after = pg_stats()
        return {k: after[k] - stats_before[k] for k in after}
    return {}


PRODUCER = """
import sys, time
import {app} as app
actor = app.ACTORS["noop"]
n = int(sys.argv[1])
print(time.time(), flush=True)  # the clock starts at the first send, not at the import
for _ in range(n):
    actor.send()
"""


def bench_concurrent(system: System, n: int, logdir: Path) -> None:
    """Workers already running, a producer process sending ``n`` jobs one ``send()`` at a
    time while they work (both on the same cores): from the first send until every job is
    done (for the platform: FINISHED in PostgreSQL)."""
    flush(system)
    worker = Worker(system, logdir / f"{system.name}-concurrent.log")
    try:
        time.sleep(1.0)
        out = subprocess.run([sys.executable, "-c", PRODUCER.format(app=system.app), str(n)], cwd=ROOT, check=True,
                             env={**os.environ, **ENV}, capture_output=True, text=True)
        wait_done(system, n)
        elapsed = time.time() - float(out.stdout.split()[0])
    finally:
        worker.stop()
    system.record("concurrent_msgs_per_s", n / elapsed)


def _sync() -> None:
    """Bring the ledger up to date (what a worker's drainer does continuously)."""
    import jobplatform

    jobplatform.platform.sync()


def pg_stats() -> dict[str, int]:
    row = psql(f"SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database WHERE datname = '{DB}'", DB)
    commits, inserted, updated = (int(x) for x in row.strip().split("|"))
    return {"commits": commits, "inserted": inserted, "updated": updated}


def bench_latency(system: System, n: int, logdir: Path) -> None:
    flush(system)
    actor = system.actors["latency"]
    worker = Worker(system, logdir / f"{system.name}-latency.log")
    client = system.broker.client
    key = ENV["BENCH_LATENCY_KEY"]
    try:
        time.sleep(1.0)  # let the consumers settle into their idle polling
        for _ in range(n):
            before = client.llen(key)
            actor.send(time.time())
            deadline = time.monotonic() + 5
            while client.llen(key) == before and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(0.02)  # low load: one job at a time, spaced out
    finally:
        worker.stop()
    samples = sorted(float(x) * 1000 for x in client.lrange(key, 0, -1))
    if len(samples) < n:
        raise RuntimeError(f"latency: only {len(samples)} of {n} samples")
    system.record("latency_p50_ms", statistics.median(samples))
    system.record("latency_p99_ms", samples[min(len(samples) - 1, int(len(samples) * 0.99))])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_idle_cpu(system: System, seconds: float, logdir: Path) -> None:
    flush(system)
    worker = Worker(system, logdir / f"{system.name}-idle.log")
    try:
        time.sleep(2)
        pids = worker.pids()
        before = {p: cpu_seconds(p) for p in pids}
        time.sleep(seconds)
        used = [cpu_seconds(p) - before[p] for p in pids]
    finally:
        worker.stop()
    system.record("idle_cpu_pct_per_process", 100 * max(used) / seconds)


def bench_scrape(rows: int) -> float | None:
    """Median time of a full exporter scrape with ``rows`` finished runs in job_runs."""
    if not (ROOT / "metrics" / "__main__.py").exists():
        return None
    psql("TRUNCATE job_runs, job_errors RESTART IDENTITY CASCADE", DB)
    psql("INSERT INTO job_runs (message_id, actor_name, queue_name, status, resolution, attempts, enqueued_at, "
         "started_at, finished_at) SELECT md5(g::text), 'bench_' || (g % 20), 'bench', 'FINISHED', "
         "CASE WHEN g % 50 = 0 THEN 'ERROR' ELSE 'COMPLETED' END, 1, now() - (g || ' seconds')::interval, "
         f"now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval FROM generate_series(1, {rows}) g",
         DB)
    psql("ANALYZE job_runs", DB)
    import urllib.request

    port = 19300
    proc = subprocess.Popen([sys.executable, "-m", "metrics", "--port", str(port)], cwd=ROOT,
                            env={**os.environ, **ENV, "EXPORTER_PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.2)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; proves the script works")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else Sizes()
    logdir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"bench-{TAG}"
    logdir.mkdir(parents=True, exist_ok=True)

    setup_db()
    from bench import plain_app, tracked_app

    plain = System("plain", "bench.plain_app", plain_app.broker, plain_app.ACTORS, tracked=False)
    tracked = System("platform", "bench.tracked_app", tracked_app.broker, tracked_app.ACTORS, tracked=True)
    systems = (plain, tracked)
    ledger: dict[str, list[dict[str, int]]] = {"platform": []}
    try:
        for rep in range(sizes.reps):
            order = systems if rep % 2 == 0 else systems[::-1]
            print(f"repetition {rep + 1}/{sizes.reps}", flush=True)
            for system in order:
                bench_send(system, sizes.send)
                for n in sizes.bulk:
                    bench_bulk(system, n)
                stats = bench_processing(system, "noop", sizes.noop, logdir)
                if stats:
                    ledger[system.name].append({k: v for k, v in stats.items()} | {"jobs": sizes.noop})
                bench_processing(system, "sleep_1ms", sizes.sleep, logdir)
                bench_concurrent(system, sizes.concurrent, logdir)
                bench_latency(system, sizes.latency, logdir)
                print(f"  {system.name}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in system.results.items()),
                      flush=True)
        for system in systems:
            bench_idle_cpu(system, sizes.idle_s, logdir)
        scrape_ms = bench_scrape(sizes.scrape_rows)
    finally:
        for system in systems:
            flush(system)
        psql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')

    report = render(systems, ledger, scrape_ms, sizes, args.smoke)
    print(report)
    if not args.smoke:
        Path(args.out).write_text(report)
    return 0


TARGETS = {
    "send_msgs_per_s": ("≥ 1.0×", lambda r, t: r >= 1.0),
    "process_noop_msgs_per_s": ("≥ 1.15×", lambda r, t: r >= 1.15),
    "process_sleep_1ms_msgs_per_s": ("≥ 1.0×", lambda r, t: r >= 1.0),
    "concurrent_msgs_per_s": ("— (reported)", None),
    "latency_p50_ms": ("≤ 2 ms", lambda r, t: t <= 2.0),
    "latency_p99_ms": ("—", None),
    "idle_cpu_pct_per_process": ("≤ 1 %", lambda r, t: t <= 1.0),
}


def render(systems: tuple[System, ...], ledger: dict[str, list[dict[str, int]]], scrape_ms: float | None,
           sizes: Sizes, smoke: bool) -> str:
    plain, _platform = systems
    med = {s.name: {k: statistics.median(v) for k, v in s.results.items()} for s in systems}
    rows = [
        ("single `send()` msgs/s", "send_msgs_per_s"),
        *[(f"bulk enqueue {n:,} msgs/s", f"bulk_{n}_msgs_per_s") for n in sizes.bulk],
        ("processing a queued backlog, no-op job, msgs/s", "process_noop_msgs_per_s"),
        ("processing a queued backlog, 1 ms job, msgs/s", "process_sleep_1ms_msgs_per_s"),
        ("processing while a producer sends, no-op job, msgs/s", "concurrent_msgs_per_s"),
        ("pickup latency p50, ms (idle workers, one send every 20 ms)", "latency_p50_ms"),
        ("pickup latency p99, ms", "latency_p99_ms"),
        ("idle CPU per worker process, %", "idle_cpu_pct_per_process"),
    ]
    lines = [
        "# Benchmark results" + (" (smoke run)" if smoke else ""),
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"- python {platform.python_version()}, dramatiq {version('dramatiq')}, redis-py {version('redis')}, "
        f"SQLAlchemy {version('SQLAlchemy')}, psycopg2 {version('psycopg2-binary')}",
        f"- server: {psql('SHOW server_version').strip()} (PostgreSQL), "
        f"Redis {_redis_version(plain.broker.client)}",
        f"- workers: `dramatiq <app> -p 2 -t 8` for both; {sizes.reps} interleaved repetitions, medians",
        "- plain = dramatiq's RedisBroker, default middleware, no ledger; platform = this platform in its default "
        "configuration (full middleware stack, every run recorded in PostgreSQL; a processing run ends when the "
        "ledger has every run FINISHED)",
        "",
        "| measure | plain dramatiq | platform | ratio | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for label, key in rows:
        p, t = med["plain"].get(key), med["platform"].get(key)
        if p is None or t is None:
            continue
        ratio = t / p if p else float("nan")
        if key.startswith("bulk_"):
            target, ok = "≥ 15,000 msgs/s", t >= 15_000
        else:
            target, check = TARGETS[key]
            ok = check(ratio, t) if check else None
        met = "—" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {label} | {p:,.1f} | {t:,.1f} | {ratio:.2f}× | {target} | {met} |")
    if scrape_ms is not None:
        lines.append(f"| exporter scrape, {sizes.scrape_rows:,} job_runs rows, ms | — | {scrape_ms:,.1f} | — | "
                     f"≤ 100 ms | {'yes' if scrape_ms <= 100 else '**no**'} |")
    for _name, samples in ledger.items():
        if not samples:
            continue
        per_job = {k: statistics.median(d[k] / d["jobs"] for d in samples) for k in ("commits", "inserted", "updated")}
        lines += ["", f"Ledger cost per no-op job while processing (pg_stat_database deltas / jobs, median): "
                      f"{per_job['commits']:.4f} commits (write transactions), "
                      f"{per_job['inserted']:.2f} rows inserted, {per_job['updated']:.2f} rows updated."]
    lines += ["", "Raw samples:", "", "```", json.dumps({s.name: s.results for s in systems}, indent=1),
              "```", ""]
    return "\n".join(lines)


def _redis_version(client: Any) -> str:
    return str(client.info("server").get("redis_version"))


if __name__ == "__main__":
    sys.exit(main())
