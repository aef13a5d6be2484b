"""How much a Redis crash loses, measured: the ledger's buffer window.

    .venv/bin/python -m bench.redis_crash_loss            # no persistence, then AOF everysec

A private ``redis-server`` (no persistence, or AOF ``appendfsync everysec``), a worker
(``dramatiq jobplatform -p 2 -t 8``, whose drainer applies the buffer to PostgreSQL) and a
producer sending jobs at a steady rate. Redis is SIGKILLed mid-stream and restarted.
Every send the producer saw succeed is counted; a run is *lost* when it is neither in the
ledger nor run afterwards (its message and its PENDING event died with Redis before the
drainer applied them). Reconciliation re-enqueues the runs whose PENDING reached
PostgreSQL; the script waits for that, then reports the loss in runs and in milliseconds
of sending.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG_URL", "postgresql://root@127.0.0.1:5432")

PRODUCER = """
import sys, time
import jobplatform
from actors.examples import example
rate, seconds, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
sent, failed = [], 0
t0 = time.time()
with open(out, "w") as f:
    while time.time() - t0 < seconds:
        try:
            m = example.send("x")
            f.write(f"{time.time():.6f} {m.message_id}\\n")
            f.flush()
        except Exception:
            failed += 1
        time.sleep(1 / rate)
print(failed)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, directory: str, aof: bool) -> subprocess.Popen[bytes]:
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", "",
            "--daemonize", "no"]
    args += ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis did not start")


def psql(sql: str, db: str) -> str:
    return subprocess.run(["psql", f"{PG}/{db}", "-Atqc", sql], check=True, capture_output=True, text=True).stdout


def run(aof: bool, rate: float, seconds: float, crash_at: float) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    db = f"crash_{tag}"
    port = free_port()
    directory = tempfile.mkdtemp(prefix="crash-")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "REDIS_NAMESPACE": f"crash{tag}", "DATABASE_URL": f"{PG}/{db}", "DEV_ENV": "1", "POSTHOG_API_KEY": "",
           "HEARTBEAT_TIMEOUT_MS": "3000", "HEARTBEAT_INTERVAL_MS": "500", "SWEEP_INTERVAL_MS": "500",
           "RECONCILE_INTERVAL_MS": "1000", "RECONCILE_GRACE_MS": "2000", "LEDGER_LEASE_MS": "1000"}
    psql(f'CREATE DATABASE "{db}"', "postgres")
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    redis_proc = start_redis(port, directory, aof)
    log = open(Path(directory) / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "jobplatform", "-p", "2", "-t", "8"], cwd=ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while (Path(directory) / "worker.log").read_text(errors="replace").count("ready for action") < 2:
            time.sleep(0.1)
        sent_file = Path(directory) / "sent.txt"
        producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(rate), str(seconds), str(sent_file)],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(crash_at)
        crashed_at = time.time()
        os.kill(redis_proc.pid, signal.SIGKILL)
        redis_proc.wait()
        redis_proc = start_redis(port, directory, aof)
        failed = int((producer.communicate(timeout=seconds + 60)[0] or "0").strip() or 0)
        sent = [line.split() for line in sent_file.read_text().splitlines() if line.strip()]
        ids = [m for _, m in sent]
        deadline = time.time() + 60
        while time.time() < deadline:  # reconciliation re-enqueues what PostgreSQL knows
            done = int(psql(f"SELECT count(*) FROM job_runs WHERE status = 'FINISHED' AND message_id IN "
                            f"({','.join(repr(m) for m in ids)})", db)) if ids else 0
            known = int(psql("SELECT count(*) FROM job_runs", db))
            if done == known and time.time() - crashed_at > 8:
                break
            time.sleep(0.5)
        in_ledger = set(psql("SELECT message_id FROM job_runs", db).split())
        lost = [(float(t), m) for t, m in sent if m not in in_ledger]
        window = (max(t for t, _ in lost) - min(t for t, _ in lost)) * 1000 if len(lost) > 1 else 0.0
        return {"aof": aof, "sent_ok": len(ids), "send_errors": failed, "lost": len(lost),
                "lost_ms_of_sending": len(lost) / rate * 1000, "lost_span_ms": window,
                "finished": int(psql("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'", db))}
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        redis_proc.kill()
        psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', "postgres")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="sends per second")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--crash-at", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    for aof in (False, True):
        for _ in range(args.reps):
            print(run(aof, args.rate, args.seconds, args.crash_at), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
