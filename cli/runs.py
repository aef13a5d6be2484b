"""``jobctl runs | run | retry | revoke | prune | reconcile``: the ledger and actions on it."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click

from cli.common import current, platform
from cli.main import json_option, operator_option
from cli.output import emit, emit_json, error, plain_table
from jobcore.db import control_engine
from jobcore.errors import PlatformError
from ledger.reader import RunFilter, get_run, query_runs, run_errors

RUN_COLUMNS = ("id", "actor_name", "tenant_id", "status", "resolution", "attempts", "enqueued_at", "wait_ms",
               "run_ms", "message_id")
STATUSES = click.Choice(["PENDING", "STARTED", "FINISHED"], case_sensitive=False)
RESOLUTIONS = click.Choice(["COMPLETED", "ERROR", "EXPIRED", "REVOKED"], case_sensitive=False)


@click.command()
@click.option("--status", type=STATUSES)
@click.option("--resolution", type=RESOLUTIONS)
@click.option("--actor")
@click.option("--tenant", type=int)
@click.option("--since", type=click.DateTime(), help="only runs enqueued at or after this time (UTC)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="keep printing new runs as they are sent (Ctrl-C stops)")
@json_option
def runs(status: str | None, resolution: str | None, actor: str | None, tenant: int | None,
         since: datetime | None, limit: int, follow: bool, as_json: bool) -> None:
    """List runs, newest first, with queue wait and run time in ms."""
    current()
    filters = RunFilter(status=status.upper() if status else None,
                        resolution=resolution.upper() if resolution else None, actor=actor, tenant=tenant,
                        since=since)
    rows = query_runs(control_engine(), filters, limit=limit)
    if not follow:
        emit(rows, RUN_COLUMNS, as_json)
        return
    _follow(filters, rows, as_json)


def _follow(filters: RunFilter, rows: list[dict[str, Any]], as_json: bool) -> None:
    """Print the newest runs, then every new run as a line (JSON lines with --json)."""
    def show(batch: list[dict[str, Any]], header: bool) -> None:
        for row in reversed(batch):
            if as_json:
                click.echo(json.dumps(row, default=str))
        if not as_json and batch:
            lines = plain_table(list(reversed(batch)), RUN_COLUMNS).splitlines()
            click.echo("\n".join(lines if header else lines[1:]))

    show(rows, header=True)
    last = max((r["id"] for r in rows), default=0)
    try:
        while True:
            time.sleep(1.0)
            current(quiet=True)
            new = query_runs(control_engine(), filters, limit=1000, after_id=last)
            if new:
                show(new, header=False)
                last = max(r["id"] for r in new)
    except KeyboardInterrupt:
        return


@click.command()
@click.argument("ref", metavar="ID")
@json_option
def run(ref: str, as_json: bool) -> None:
    """One run (by id or message id) with its errors and tracebacks."""
    current()
    detail = get_run(control_engine(), ref)
    errors = run_errors(control_engine(), detail["id"])
    if as_json:
        emit_json({"run": detail, "errors": errors})
        return
    for k, v in detail.items():
        click.echo(f"{k:>20}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
    for e in errors:
        click.echo(f"\n--- attempt {e['attempt']} ({'will retry' if e['will_retry'] else 'final'}) "
                   f"{e['created_at']}: {e['exception_type']}: {e['message']}\n{e['traceback']}")


@click.command()
@click.argument("message_id")
@operator_option
def revoke(message_id: str, operator: str | None) -> None:
    """Revoke a run: a queued one never starts, a running one is stopped."""
    result = platform().revoke(message_id, operator=operator)
    click.echo(f"{result.message_id}: {result.outcome}" + (f" ({result.resolution})" if result.resolution else ""))


@click.command()
@click.argument("ref", metavar="ID")
@operator_option
@click.option("--force", is_flag=True, help="retry even if the run was retried before")
def retry(ref: str, operator: str | None, force: bool) -> None:
    """Re-send a finished ERROR/EXPIRED/REVOKED run as a new run linked to it."""
    from jobplatform.root import default_operator
    from ledger.operations import retry_run

    current()
    message = retry_run(platform().broker, control_engine(), ref, operator=operator or default_operator(),
                        force=force)
    click.echo(f"retrying run {ref} as message {message.message_id}")


@click.command()
@click.option("--older-than", type=float, metavar="DAYS", help="default: RETENTION_DAYS (30)")
def prune(older_than: float | None) -> None:
    """Delete finished runs older than N days, in small batches."""
    from cli.output import progress
    from jobcore.settings import get_settings
    from ledger.retention import prune as prune_runs

    days = older_than if older_than is not None else float(get_settings().retention_days)
    with progress(f"pruning runs finished more than {days:g} days ago", None) as bar:
        total = prune_runs(control_engine(), days, on_batch=bar.advance)
    click.echo(f"pruned {total} finished runs older than {days:g} days")


@click.command()
@click.option("--grace", type=float, default=30, show_default=True, help="only runs idle this many seconds")
def reconcile(grace: float) -> None:
    """Re-enqueue open runs whose message is gone from Redis."""
    from cli.output import console, is_tty

    if is_tty():
        with console(stderr=True).status("reconciling the ledger with Redis..."):
            report = platform().reconcile(grace_s=grace)
    else:
        report = platform().reconcile(grace_s=grace)
    if report.skipped:
        raise PlatformError(f"reconciliation skipped: {report.skipped}")
    click.echo(f"checked {report.checked} open runs: re-enqueued {len(report.reenqueued)}, "
               f"closed {len(report.closed)}")


def register(group: click.Group) -> None:
    for command in (runs, run, revoke, retry, prune, reconcile):
        group.add_command(command)


__all__ = ["error", "register"]
