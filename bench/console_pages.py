"""Benchmark: server time of every console page with 1,000,000 runs in the ledger.

    nice .venv/bin/python -m bench.console_pages              # 1,000,000 runs (a few minutes)
    nice .venv/bin/python -m bench.console_pages --runs 20000 # quicker

Loads a scratch control database (migrated with ``alembic upgrade head``): runs over the
last 30 days (RETENTION_DAYS) across 20 actors (one rare) and 50 tenants, 94% COMPLETED,
4% ERROR (three failed attempts each, 12 error groups plus a rare one), 1% EXPIRED, 1%
REVOKED, 150 open runs; schedule ticks of every production schedule over the last 3 days,
each linked to a run; 50 tenants. Then requests every page through the console's WSGI app
in this process (server time: routing, queries, template; no network) and reports p50 and
p95 per page. Every SQL statement the pages run is captured and EXPLAINed: the report
lists the indexes each uses and fails any sequential scan of a large table. Writes
``bench/CONSOLE_RESULTS.md``; the scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG_URL", "postgresql://root@127.0.0.1:5432")
TAG = uuid.uuid4().hex[:6]
DB = f"bench_console_{TAG}"
BIG_TABLES = {"job_runs", "job_errors", "schedule_ticks", "schedule_tick_runs"}
ACTORS = [f"bench_actor_{i:02d}" for i in range(19)]
RARE_ACTOR = "PROCESS_HUNTINGTON_BATCH"
TARGET_P95_MS = 100.0


def admin(sql: str, db: str = "postgres") -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG}/{db}")
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


LOAD_RUNS = """
INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, args, kwargs, context, status, resolution,
                      attempts, enqueued_at, started_at, finished_at, result, worker_id, updated_at)
SELECT md5('run' || g),
       CASE WHEN g %% 1000 = 0 THEN %(rare)s ELSE (%(actors)s::text[])[1 + (g::bigint * 7919) %% 19] END,
       'default', CASE WHEN g %% 10 = 0 THEN NULL ELSE 1 + (g * 31) %% 50 END,
       jsonb_build_array(g %% 100), '{}'::jsonb, jsonb_build_object('request_id', 'bench-' || g),
       s.status, s.resolution, CASE WHEN s.resolution = 'ERROR' THEN 3 WHEN s.status = 'PENDING' THEN 0 ELSE 1 END,
       t.enq, CASE WHEN s.status = 'PENDING' OR s.resolution IN ('EXPIRED') THEN NULL
                   ELSE t.enq + interval '40 ms' END,
       CASE WHEN s.status = 'FINISHED' THEN t.enq + (200 + g %% 900) * interval '1 ms' END,
       CASE WHEN s.resolution = 'COMPLETED' THEN jsonb_build_object('rows', g %% 50) END,
       CASE WHEN s.status <> 'PENDING' THEN 'bench-worker' END, t.enq
  FROM generate_series(1, %(n)s) g
 CROSS JOIN LATERAL (SELECT now() - (%(n)s - g) * (30 * 86400.0 / %(n)s) * interval '1 second' AS enq) t
 CROSS JOIN LATERAL (SELECT
       CASE WHEN g > %(n)s - 150 THEN (CASE WHEN g %% 2 = 0 THEN 'PENDING' ELSE 'STARTED' END) ELSE 'FINISHED' END
           AS status,
       CASE WHEN g > %(n)s - 150 THEN NULL WHEN g %% 100 < 94 THEN 'COMPLETED' WHEN g %% 100 < 98 THEN 'ERROR'
            WHEN g %% 100 = 98 THEN 'EXPIRED' ELSE 'REVOKED' END AS resolution) s
"""

LOAD_ERRORS = """
INSERT INTO job_errors (job_run_id, attempt, exception_type, message, traceback, fingerprint, will_retry, created_at)
SELECT r.id, a, 'bench.errors.Failure' || (r.id %% 12),
       'failure ' || (r.id %% 12) || ' while processing item ' || r.id,
       'Traceback (most recent call last):' || E'\\n' || '  File "bench.py", line ' || (r.id %% 12) || ', in job',
       CASE WHEN r.id %% 997 = 0 THEN md5('rare') ELSE md5('fp' || (r.id %% 12)) END, a < 3,
       r.enqueued_at + a * interval '2 s'
  FROM job_runs r CROSS JOIN generate_series(1, 3) a
 WHERE r.resolution = 'ERROR'
"""


def load(dsn: str, n: int) -> dict[str, Any]:
    """Fill the scratch database; returns ids the page requests use."""
    import psycopg2

    from periodic.schedules import production_schedules

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(LOAD_RUNS, {"n": n, "actors": ACTORS, "rare": RARE_ACTOR})
    cur.execute(LOAD_ERRORS, {})
    now = datetime.now(UTC)
    ticks = []
    for sc in production_schedules():
        for i, at in enumerate(sc.cadence.fire_times_between(now - timedelta(days=3), now)):
            status = "MISSED" if i % 97 == 5 else ("FAILED" if i % 89 == 7 else "ENQUEUED")
            ticks.append((sc.name, at, status))
    cur.executemany("INSERT INTO schedule_ticks (schedule_name, tick_at, status, enqueued_at, scheduler_id) "
                    "VALUES (%s, %s, %s, %s, 'bench')", [(s, t, st, t if st == "ENQUEUED" else None)
                                                          for s, t, st in ticks])
    cur.execute("INSERT INTO schedule_tick_runs (tick_id, message_id, role) SELECT id, md5('run' || (%s - id * 7)), "
                "'dispatcher' FROM schedule_ticks WHERE status = 'ENQUEUED' AND id * 7 < %s", (n, n))
    cur.executemany("INSERT INTO tenants (slug, name, product, database_url, active, status) VALUES "
                    "(%s, %s, 'escrow', %s, true, 'ready')",
                    [(f"bench-{i}", f"Bench tenant {i}", f"{PG}/bench_nowhere_{TAG}_{i}") for i in range(1, 51)])
    cur.execute("INSERT INTO operator_actions (action, message_id, run_id, operator, detail) "
                "SELECT 'retry', message_id, id, 'bench', '{}'::jsonb FROM job_runs WHERE resolution = 'ERROR' "
                "ORDER BY id DESC LIMIT 200")
    cur.execute("ANALYZE")
    cur.execute("SELECT id FROM job_runs WHERE resolution = 'ERROR' AND id < %s ORDER BY id DESC LIMIT 1", (n // 2,))
    error_run = cur.fetchone()[0]
    cur.execute("SELECT message_id FROM job_runs WHERE id = %s", (n // 3,))
    message_id = cur.fetchone()[0]
    cur.execute("SELECT max(id) FROM schedule_ticks WHERE status = 'ENQUEUED'")
    tick = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM job_runs")
    total = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM job_errors")
    errors = cur.fetchone()[0]
    conn.close()
    return {"error_run": error_run, "message_id": message_id, "tick": tick, "runs": total, "errors": errors,
            "ticks": len(ticks), "fingerprint": __import__("hashlib").md5(b"rare").hexdigest(), "n": n}


def pages(ids: dict[str, Any]) -> list[tuple[str, str]]:
    n = ids["n"]
    return [
        ("overview", "/"),
        ("runs", "/runs"),
        ("runs: actor", "/runs?actor=bench_actor_03"),
        ("runs: rare actor", f"/runs?actor={RARE_ACTOR}"),
        ("runs: tenant", "/runs?tenant=17"),
        ("runs: status PENDING", "/runs?status=PENDING"),
        ("runs: resolution ERROR", "/runs?resolution=ERROR"),
        ("runs: rare resolution + actor", "/runs?resolution=REVOKED&actor=bench_actor_05"),
        ("runs: last 24 h", "/runs?range=24h"),
        ("runs: old time range", "/runs?since=2000-01-01T00:00&until=" +
         (datetime.now(UTC) - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")),
        ("runs: message id", f"/runs?message={ids['message_id']}"),
        ("runs: error group", f"/runs?fingerprint={ids['fingerprint']}"),
        ("runs: schedule tick", f"/runs?tick={ids['tick']}"),
        ("runs: deep page", f"/runs?before={n // 2}"),
        ("runs: live refresh fragment", "/runs?actor=bench_actor_03#hx"),
        ("run detail", f"/runs/{ids['error_run']}"),
        ("errors (24 h)", "/errors"),
        ("errors (7 d)", "/errors?window=7d"),
        ("schedules", "/schedules"),
        ("tenants", "/tenants"),
        ("dead letters", "/dead-letters"),
    ]


def walk(node: dict[str, Any], indexes: set[str], seq: set[str]) -> None:
    """Collect the index names and the sequential scans of large tables in a plan tree."""
    if node.get("Index Name"):
        indexes.add(node["Index Name"])
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in BIG_TABLES:
        seq.add(node["Relation Name"])
    for child in node.get("Plans", []):
        walk(child, indexes, seq)


def explain_all(dsn: str, statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN each captured SELECT with its parameters; the indexes used, and any
    sequential scan of a large table."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    out = []
    seen = set()
    try:
        cur = conn.cursor()
        for statement, params in statements:
            head = statement.lstrip().split(None, 1)[0].upper()
            if head not in ("SELECT", "WITH") or statement in seen:
                continue
            seen.add(statement)
            cur.execute("EXPLAIN (FORMAT JSON) " + statement, params)
            indexes: set[str] = set()
            seq: set[str] = set()
            walk(cur.fetchone()[0][0]["Plan"], indexes, seq)
            tables = sorted(t for t in BIG_TABLES if t in statement)
            out.append({"sql": " ".join(statement.split())[:110], "indexes": sorted(indexes), "seq_scans": sorted(seq),
                        "tables": tables})
    finally:
        conn.rollback()
        conn.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "bench" / "CONSOLE_RESULTS.md"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    dsn = f"{PG}/{DB}"
    os.environ.update({"DATABASE_URL": dsn, "REDIS_NAMESPACE": f"bench-console-{TAG}", "DEV_ENV": "1",
                       "POSTHOG_API_KEY": "", "CONSOLE_ANONYMOUS_ROLE": "operator"})
    admin(f'CREATE DATABASE "{DB}"')
    try:
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ})
        started = time.perf_counter()
        ids = load(dsn, args.runs)
        load_s = time.perf_counter() - started
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        import jobplatform
        from console.app import create_app

        app = create_app(jobplatform.platform)
        client = app.test_client()
        captured: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            captured.append((statement, params))

        results = []
        for name, path in pages(ids):
            headers = {"HX-Request": "true"} if path.endswith("#hx") else {}
            url = path.removesuffix("#hx")
            for _ in range(3):  # warm caches and connections
                response = client.get(url, headers=headers)
                assert response.status_code == 200, (name, response.status_code, response.get_data(as_text=True)[:300])
            event.listen(Engine, "before_cursor_execute", capture)
            client.get(url, headers=headers)
            event.remove(Engine, "before_cursor_execute", capture)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                client.get(url, headers=headers)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            results.append({"page": name, "path": url, "p50": statistics.median(times),
                            "p95": times[max(0, int(round(0.95 * len(times))) - 1)]})
        plans = explain_all(dsn, captured)
    finally:
        from jobcore.db import reset_control_engine

        reset_control_engine()
        if not args.keep:
            admin(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    report = render(results, plans, ids, load_s)
    Path(args.out).write_text(report)
    print(report)
    slow = [r["page"] for r in results if r["p95"] > TARGET_P95_MS]
    scans = [p["sql"] for p in plans if p["seq_scans"]]
    return 1 if slow or scans else 0


def render(results: list[dict[str, Any]], plans: list[dict[str, Any]], ids: dict[str, Any], load_s: float) -> str:
    lines = ["# Console page timings", "",
             f"`python -m bench.console_pages --runs {ids['n']}` on {datetime.now(UTC):%Y-%m-%d} "
             f"(2 shared cores, run with `nice`): {ids['runs']:,} runs, {ids['errors']:,} failed attempts, "
             f"{ids['ticks']:,} schedule ticks, 50 tenants (loaded in {load_s:.0f} s). Server time = the WSGI app in "
             "process (routing, SQL, Redis, template), no network. Target: p95 <= 100 ms.", "",
             "| page | URL | p50 ms | p95 ms |", "|---|---|---:|---:|"]
    for r in results:
        lines.append(f"| {r['page']} | `{r['path'][:70]}` | {r['p50']:.1f} | {r['p95']:.1f} |")
    lines += ["", "## EXPLAIN of every statement the pages ran", "",
              "Indexes each plan uses; a sequential scan of a large table (job_runs, job_errors, the schedule "
              "tick tables) would be listed as a failure.", "",
              "| statement | tables | indexes used | seq scans |", "|---|---|---|---|"]
    for p in plans:
        lines.append(f"| `{p['sql'].replace('|', '/')}` | {', '.join(p['tables']) or '-'} | "
                     f"{', '.join(p['indexes']) or '-'} | {', '.join(p['seq_scans']) or 'none'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
