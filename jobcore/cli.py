"""``jobctl``: the operator command line (``python -m jobcore.cli`` works too).

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

from dramatiq import Message
from sqlalchemy import text

from jobcore.db import control_engine


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
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for column, value in (("status", status), ("resolution", resolution), ("actor_name", actor),
                          ("tenant_id", tenant)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    if since:
        where.append("enqueued_at >= :since")
        params["since"] = since
    if message_ids is not None:
        where.append("message_id = ANY(:ids)")
        params["ids"] = list(message_ids)
    sql = ("SELECT id, message_id, actor_name, queue_name, tenant_id, status, resolution, attempts, enqueued_at, "
           "started_at, finished_at, progress, result, args, kwargs, "
           "round(extract(epoch FROM started_at - enqueued_at) * 1000) AS wait_ms, "
           "round(extract(epoch FROM finished_at - started_at) * 1000) AS run_ms "
           "FROM job_runs" + (" WHERE " + " AND ".join(where) if where else "") +
           " ORDER BY id DESC LIMIT :limit")
    with control_engine().connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def cmd_runs(args: argparse.Namespace) -> int:
    rows = query_runs(status=args.status, resolution=args.resolution, actor=args.actor, tenant=args.tenant,
                      since=args.since, limit=args.limit)
    emit(rows, RUN_COLUMNS, args.json)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    key = "id" if args.id.isdigit() else "message_id"
    with control_engine().connect() as conn:
        run = conn.execute(text(f"SELECT * FROM job_runs WHERE {key} = :v"),
                           {"v": int(args.id) if key == "id" else args.id}).mappings().first()
        if run is None:
            print(f"error: no run {args.id}", file=sys.stderr)
            return 1
        errors = [dict(e) for e in conn.execute(text(
            "SELECT attempt, exception_type, message, will_retry, created_at, fingerprint, traceback "
            "FROM job_errors WHERE job_run_id = :id ORDER BY attempt"), {"id": run["id"]}).mappings()]
    detail = dict(run)
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
    from jobcore.revocation import revoke

    result = revoke(args.message_id)
    print(f"{result.message_id}: {result.outcome}" + (f" ({result.resolution})" if result.resolution else ""))
    return 0


def _broker() -> Any:
    import actors

    return actors.broker


def cmd_retry(args: argparse.Namespace) -> int:
    """Re-enqueue a finished ERROR/EXPIRED/REVOKED run as a new run linked to it."""
    import dramatiq

    with control_engine().connect() as conn:
        run = conn.execute(text("SELECT * FROM job_runs WHERE id = :v OR message_id = :s"),
                           {"v": int(args.id) if args.id.isdigit() else -1, "s": args.id}).mappings().first()
    if run is None:
        print(f"error: no run {args.id}", file=sys.stderr)
        return 1
    if run["status"] != "FINISHED" or run["resolution"] == "COMPLETED":
        print(f"error: run {run['id']} is {run['status']}/{run['resolution']}; only finished ERROR, EXPIRED or "
              "REVOKED runs can be retried", file=sys.stderr)
        return 1
    from jobcore.redaction import MASK

    if MASK in json.dumps([run["args"], run["kwargs"]]):
        print(f"error: run {run['id']} had secret arguments, which the ledger does not keep; send it again "
              "from the application", file=sys.stderr)
        return 1
    broker = _broker()
    actor = broker.get_actor(run["actor_name"])
    message = actor.send_with_options(args=tuple(run["args"]), kwargs=dict(run["kwargs"]),
                                      job_context=run["context"] or None, retry_of=run["id"])
    assert isinstance(message, dramatiq.Message)
    print(f"retrying run {run['id']} as message {message.message_id}")
    return 0


def queue_depths(broker: Any) -> list[dict[str, Any]]:
    """Depth of every queue in the namespace: ready, delayed (.DQ), dead letters (.XQ)."""
    client = broker.client
    ns = broker.namespace
    names = set(broker.get_declared_queues())
    for key in client.scan_iter(match=f"{ns}:*.msgs", count=500):
        name = key.decode()[len(ns) + 1:-len(".msgs")]
        names.add(name.removesuffix(".DQ").removesuffix(".XQ"))
    rows = []
    for name in sorted(names):
        rows.append({"queue": name, "ready": client.llen(f"{ns}:{name}"),
                     "delayed": client.hlen(f"{ns}:{name}.DQ.msgs"), "dead": client.zcard(f"{ns}:{name}.XQ"),
                     "stored": client.hlen(f"{ns}:{name}.msgs")})
    return rows


def cmd_queues(args: argparse.Namespace) -> int:
    emit(queue_depths(_broker()), ("queue", "ready", "delayed", "dead", "stored"), args.json)
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List dead-lettered messages of a queue, or requeue them."""
    from jobcore.redaction import get_redactor

    broker = _broker()
    client, ns, queue = broker.client, broker.namespace, args.queue
    ids = [i.decode() for i in client.zrange(f"{ns}:{queue}.XQ", 0, -1)]
    rows = []
    for rid in ids:
        raw = client.hget(f"{ns}:{queue}.XQ.msgs", rid)
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = {}
        rows.append({"redis_id": rid, "message_id": data.get("message_id"), "actor": data.get("actor_name"),
                     "args": get_redactor().value(data.get("args")), "undecodable": not data})
    if args.requeue:
        selected = [r for r in rows if args.requeue == "all" or args.requeue in (r["redis_id"], r["message_id"])]
        for r in selected:
            raw = client.hget(f"{ns}:{queue}.XQ.msgs", r["redis_id"])
            if raw is None or r["undecodable"]:
                print(f"skipping {r['redis_id']}: undecodable, see rejected_messages", file=sys.stderr)
                continue
            # Its run is FINISHED (that is why it was dead-lettered), so it is sent again as
            # a new run linked to the old one, through the normal, validated send path.
            old = Message.decode(raw)
            options = {k: v for k, v in old.options.items()
                       if k not in ("redis_message_id", "ledger_tracked", "retries", "eta", "due_at_ms")}
            with control_engine().connect() as conn:
                options["retry_of"] = conn.execute(text("SELECT id FROM job_runs WHERE message_id = :m"),
                                                   {"m": old.message_id}).scalar()
            new = broker.enqueue(Message(queue_name=queue, actor_name=old.actor_name, args=old.args,
                                         kwargs=old.kwargs, options=options))
            pipe = client.pipeline()
            pipe.zrem(f"{ns}:{queue}.XQ", r["redis_id"])
            pipe.hdel(f"{ns}:{queue}.XQ.msgs", r["redis_id"])
            pipe.execute()
            r["actor"] = f"{old.actor_name} as new message {new.message_id}"
            print(f"requeued {r['redis_id']} ({r['actor']})")
        return 0
    emit(rows, ("redis_id", "message_id", "actor", "args", "undecodable"), args.json)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from jobcore.retention import prune

    print(f"pruned {prune(args.older_than)} finished runs older than {args.older_than} days")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from jobcore.reconcile import reconcile

    report = reconcile(_broker(), grace_s=args.grace)
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
    import actors  # noqa: F401 - declares the actors on the broker
    from actors.examples import example, example_error, example_progress, example_with_args
    from jobcore.context import job_context
    from jobcore.revocation import revoke

    with job_context(tenant_id=1, request_id="demo"):
        sent = [
            example.send("hello"),
            example_with_args.send(2, 40, label="answer", api_key="demo-secret-key"),
            example_progress.send(5, 0.2),
            example_error.send("a demo failure: retried twice, then ERROR"),
            example.send_with_options(args=("too late",), max_age=1),  # EXPIRED
        ]
        queued = example.send_with_options(args=("revoked before it ran",), delay=60_000)
        revoke(queued.message_id)
        sent.append(queued)
    # Real domain work on the demo tenants, through the same fan-out the scheduler uses.
    from tenancy.fanout import fan_out
    from tenancy.registry import list_tenants

    domain = [("job_user_offsite_tracking", "escrow"), ("job_account_balance_check", "escrow"),
              ("agency_health_checks", "casemgmt"), ("agency_overnight_aggregations", "casemgmt")]
    for actor_name, product in domain:
        if actor_name in actors.broker.actors and list_tenants(product=product):
            sent += fan_out(actor_name, product=product)
    ids = [m.message_id for m in sent]
    print(f"demo: sent {len(ids)} jobs; waiting for a worker (dramatiq actors) to finish them...", flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
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
    p.set_defaults(fn=cmd_revoke)

    p = sub.add_parser("retry", help="re-enqueue a finished ERROR/EXPIRED/REVOKED run as a new, linked run")
    p.add_argument("id", help="run id or message id")
    p.set_defaults(fn=cmd_retry)

    p = sub.add_parser("queues", help="depth of each queue: ready, delayed (.DQ), dead letters (.XQ)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_queues)

    p = sub.add_parser("dead-letters", help="list a queue's dead-lettered messages, or requeue them")
    p.add_argument("queue", nargs="?", default="default")
    p.add_argument("--requeue", metavar="ID|all", help="requeue one (redis or message id) or all")
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
    except Exception as exc:  # operator-facing: one line, not a traceback
        from jobcore.errors import PlatformError

        if isinstance(exc, PlatformError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
