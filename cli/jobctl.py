"""``jobctl``: the operator command line (``python -m cli`` works too).

Every command has ``--help``; listing commands print readable tables, or JSON with
``--json`` for scripts. Nothing printed here contains argument values that the
redactor masks: the ledger only ever stores redacted arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import text

from jobcore.db import control_engine
from jobcore.errors import PlatformError
from ledger.reader import RunFilter, get_run, run_errors
from ledger.reader import query_runs as read_runs


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Render rows as a fixed-width text table."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(value, (dict, list)):
            value = json.dumps(value, separators=(",", ":"))
        s = str(value)
        return s if len(s) <= 60 else s[:57] + "..."

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def emit(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
    else:
        print(table(rows, columns) if rows else "(none)")


RUN_COLUMNS = ("id", "actor_name", "tenant_id", "status", "resolution", "attempts", "enqueued_at", "wait_ms",
               "run_ms", "message_id")


def query_runs(*, status: str | None = None, resolution: str | None = None, actor: str | None = None,
               tenant: int | None = None, since: str | None = None, limit: int = 50,
               message_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs, newest first, with queue wait and run time in milliseconds."""
    return read_runs(control_engine(), RunFilter(status=status, resolution=resolution, actor=actor, tenant=tenant,
                                                 since=since, message_ids=message_ids), limit=limit)


def _platform() -> Any:
    import jobplatform

    return jobplatform.platform


def _current() -> None:
    """Bring the ledger up to date before reading it (events drain within ~50 ms; a
    command run right after a send should still see it)."""
    try:
        _platform().ledger.sync(5.0)
    except PlatformError as exc:
        print(f"warning: the ledger may be behind: {exc}", file=sys.stderr)


def cmd_runs(args: argparse.Namespace) -> int:
    _current()
    rows = query_runs(status=args.status, resolution=args.resolution, actor=args.actor, tenant=args.tenant,
                      since=args.since, limit=args.limit)
    emit(rows, RUN_COLUMNS, args.json)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _current()
    detail = get_run(control_engine(), args.id)
    errors = run_errors(control_engine(), detail["id"])
    if args.json:
        print(json.dumps({"run": detail, "errors": errors}, default=str, indent=2))
        return 0
    for k, v in detail.items():
        print(f"{k:>20}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    for e in errors:
        print(f"\n--- attempt {e['attempt']} ({'will retry' if e['will_retry'] else 'final'}) "
              f"{e['created_at']}: {e['exception_type']}: {e['message']}\n{e['traceback']}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    result = _platform().revoke(args.message_id, operator=args.operator)
    print(f"{result.message_id}: {result.outcome}" + (f" ({result.resolution})" if result.resolution else ""))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Re-enqueue a finished ERROR/EXPIRED/REVOKED run as a new run linked to it."""
    from jobplatform.root import default_operator
    from ledger.operations import retry_run

    _current()
    platform = _platform()
    message = retry_run(platform.broker, control_engine(), args.id, operator=args.operator or default_operator(),
                        force=args.force)
    print(f"retrying run {args.id} as message {message.message_id}")
    return 0


def cmd_queues(args: argparse.Namespace) -> int:
    from jobcore.queues import queue_depths

    broker = _platform().broker
    emit(queue_depths(broker.client, broker.keys, broker.get_declared_queues()),
         ("queue", "ready", "delayed", "dead", "stored"), args.json)
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List dead-lettered messages of a queue, or requeue / discard them."""
    from jobplatform.root import default_operator
    from ledger.operations import dead_letters, discard_dead_letter, requeue_dead_letter

    broker = _platform().broker
    operator = args.operator or default_operator()
    rows = dead_letters(broker, args.queue)
    if args.requeue or args.discard:
        ref = args.requeue or args.discard
        selected = [r for r in rows if ref == "all" or ref in (r["redis_id"], r["message_id"])]
        if not selected:
            print(f"error: no dead letter {ref} on queue {args.queue}", file=sys.stderr)
            return 1
        failed = 0
        for r in selected:
            try:
                if args.requeue:
                    new = requeue_dead_letter(broker, control_engine(), args.queue, r["redis_id"], operator=operator)
                    print(f"requeued {r['redis_id']} ({r['actor']} as new message {new.message_id})")
                else:
                    discard_dead_letter(broker, control_engine(), args.queue, r["redis_id"], operator=operator)
                    print(f"discarded {r['redis_id']} ({r['actor']})")
            except PlatformError as exc:
                failed += 1
                print(f"error: {r['redis_id']}: {exc}", file=sys.stderr)
        return 1 if failed else 0
    emit(rows, ("redis_id", "message_id", "actor", "args", "kwargs", "undecodable"), args.json)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from ledger.retention import prune

    print(f"pruned {prune(control_engine(), args.older_than)} finished runs older than {args.older_than} days")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    report = _platform().reconcile(grace_s=args.grace)
    if report.skipped:
        print(f"error: reconciliation skipped: {report.skipped}", file=sys.stderr)
        return 1
    print(f"checked {report.checked} open runs: re-enqueued {len(report.reenqueued)}, closed {len(report.closed)}")
    return 0


def schedule_rows() -> list[dict[str, Any]]:
    """Every schedule with its next fire time and last tick outcome."""
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from periodic.schedules import all_schedules

    now = datetime.now(UTC)
    et = ZoneInfo("America/New_York")
    with control_engine().connect() as conn:
        last = {r["schedule_name"]: dict(r) for r in conn.execute(text(
            "SELECT DISTINCT ON (t.schedule_name) t.schedule_name, t.tick_at, t.status, "
            "  (SELECT string_agg(DISTINCT coalesce(j.resolution, j.status), ',') FROM schedule_tick_runs r "
            "   JOIN job_runs j ON j.message_id = r.message_id WHERE r.tick_id = t.id) AS outcome "
            "FROM schedule_ticks t ORDER BY t.schedule_name, t.tick_at DESC")).mappings()}
    rows = []
    for sc in all_schedules():
        nxt = sc.cadence.next_after(now)
        tick = last.get(sc.name, {})
        rows.append({"schedule": sc.name, "severity": sc.severity, "cadence": sc.cadence.describe(),
                     "next_et": nxt.astimezone(et).strftime("%a %m-%d %H:%M %Z"),
                     "next_utc": nxt.strftime("%m-%d %H:%M"), "last_tick": tick.get("tick_at"),
                     "last_status": tick.get("status"), "last_outcome": tick.get("outcome")})
    return rows


def cmd_schedules(args: argparse.Namespace) -> int:
    _current()
    emit(schedule_rows(), ("schedule", "severity", "cadence", "next_et", "next_utc", "last_tick", "last_status",
                           "last_outcome"), args.json)
    return 0


def cmd_tenants(args: argparse.Namespace) -> int:
    from jobcore.settings import mask_url
    from tenancy.registry import list_tenants

    rows = [{"id": t.id, "slug": t.slug, "name": t.name, "product": t.product, "active": t.active,
             "database": mask_url(t.database_url)} for t in list_tenants(active_only=not args.all)]
    emit(rows, ("id", "slug", "name", "product", "active", "database"), args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Enqueue the example jobs, wait for a worker to finish them, print the ledger."""
    platform = _platform()
    from actors.examples import example, example_error, example_progress, example_with_args
    from jobcore.context import job_context

    with job_context(tenant_id=1, request_id="demo"):
        sent = [
            example.send("hello"),
            example_with_args.send(2, 40, label="answer", api_key="demo-secret-key"),
            example_progress.send(5, 0.2),
            example_error.send("a demo failure: retried twice, then ERROR"),
            example.send_with_options(args=("too late",), max_age=1),  # EXPIRED
        ]
        queued = example.send_with_options(args=("revoked before it ran",), delay=60_000)
        platform.revoke(queued.message_id, operator="demo")
        sent.append(queued)
    # Real domain work on the demo tenants, through the same fan-out the scheduler uses.
    from tenancy.fanout import fan_out
    from tenancy.registry import list_tenants

    domain = [("job_user_offsite_tracking", "escrow"), ("job_account_balance_check", "escrow"),
              ("agency_health_checks", "casemgmt"), ("agency_overnight_aggregations", "casemgmt")]
    for actor_name, product in domain:
        if actor_name in platform.broker.actors and list_tenants(product=product):
            sent += fan_out(actor_name, product=product)
    ids = [m.message_id for m in sent]
    print(f"demo: sent {len(ids)} jobs; waiting for a worker (dramatiq actors) to finish them...", flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        _current()
        rows = query_runs(message_ids=ids)
        if all(r["status"] == "FINISHED" for r in rows) and len(rows) == len(ids):
            break
        time.sleep(0.5)
    rows = query_runs(message_ids=ids)
    print(table(rows, ("id", "actor_name", "tenant_id", "status", "resolution", "attempts", "wait_ms", "run_ms",
                       "kwargs", "result")))
    unfinished = [r for r in rows if r["status"] != "FINISHED"]
    if unfinished:
        print(f"demo: {len(unfinished)} runs did not finish within {args.timeout}s: is a worker running?",
              file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobctl", description="Operate the job platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("runs", help="list runs (newest first)")
    p.add_argument("--status", choices=("PENDING", "STARTED", "FINISHED"))
    p.add_argument("--resolution", choices=("COMPLETED", "ERROR", "EXPIRED", "REVOKED"))
    p.add_argument("--actor")
    p.add_argument("--tenant", type=int)
    p.add_argument("--since", help="ISO timestamp: only runs enqueued at or after it")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)

    p = sub.add_parser("run", help="one run with its errors and tracebacks")
    p.add_argument("id", help="run id or message id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("revoke", help="revoke a run: queued runs never start, running ones are stopped")
    p.add_argument("message_id")
    p.add_argument("--operator", help="who is acting (default: the login user); recorded in operator_actions")
    p.set_defaults(fn=cmd_revoke)

    p = sub.add_parser("retry", help="re-enqueue a finished ERROR/EXPIRED/REVOKED run as a new, linked run")
    p.add_argument("id", help="run id or message id")
    p.add_argument("--operator", help="who is acting (default: the login user); recorded in operator_actions")
    p.add_argument("--force", action="store_true", help="retry even if the run was retried before")
    p.set_defaults(fn=cmd_retry)

    p = sub.add_parser("queues", help="depth of each queue: ready, delayed (.DQ), dead letters (.XQ)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_queues)

    p = sub.add_parser("dead-letters", help="list a queue's dead-lettered messages, or requeue them")
    p.add_argument("queue", nargs="?", default="default")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--requeue", metavar="ID|all", help="requeue one (redis or message id) or all, as new runs")
    action.add_argument("--discard", metavar="ID|all", help="delete one (redis or message id) or all")
    p.add_argument("--operator", help="who is acting (default: the login user); recorded in operator_actions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_dead_letters)

    p = sub.add_parser("prune", help="delete finished runs older than N days, in small batches")
    p.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="default: RETENTION_DAYS (30)")
    p.set_defaults(fn=cmd_prune)

    p = sub.add_parser("reconcile", help="re-enqueue PENDING runs whose message is gone from Redis")
    p.add_argument("--grace", type=float, default=30, help="only runs idle this many seconds")
    p.set_defaults(fn=cmd_reconcile)

    p = sub.add_parser("schedules", help="every schedule: next fire time (ET and UTC), last tick and outcome")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_schedules)

    p = sub.add_parser("tenants", help="list tenants")
    p.add_argument("--all", action="store_true", help="include inactive tenants")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_tenants)

    p = sub.add_parser("demo", help="enqueue the example jobs and print their ledger rows")
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "older_than", "unset") is None:
        from jobcore.settings import get_settings

        args.older_than = float(get_settings().retention_days)
    try:
        return int(args.fn(args))
    except PlatformError as exc:  # operator-facing: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:  # e.g. a refused password: one line, the URL masked
        from jobcore.redis_client import describe_error
        from jobcore.settings import get_settings

        print(f"error: {describe_error(exc, get_settings())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
