"""``jobctl demo``: send the example jobs and real domain work, wait, print what happened."""

from __future__ import annotations

import sys
import time

import click

from cli.common import current, platform
from cli.output import plain_table
from jobcore.db import control_engine
from ledger.reader import RunFilter, query_runs


@click.command()
@click.option("--timeout", type=float, default=60, show_default=True)
def demo(timeout: float) -> None:
    """Enqueue the example jobs and real domain jobs on the demo tenants, print their runs."""
    sys.exit(run_demo(timeout))


def run_demo(timeout: float) -> int:
    """Send the demo's jobs, wait for a worker to finish them, print their ledger rows."""
    p = platform()
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
        p.revoke(queued.message_id, operator="demo")
        sent.append(queued)
    # Real domain work on the demo tenants, through the same fan-out the scheduler uses.
    from tenancy.fanout import fan_out
    from tenancy.registry import list_tenants

    domain = [("job_user_offsite_tracking", "escrow"), ("job_account_balance_check", "escrow"),
              ("agency_health_checks", "casemgmt"), ("agency_overnight_aggregations", "casemgmt")]
    for actor_name, product in domain:
        if actor_name in p.broker.actors and list_tenants(product=product):
            sent += fan_out(actor_name, product=product)
    ids = [m.message_id for m in sent]
    click.echo(f"demo: sent {len(ids)} jobs; waiting for a worker to finish them...")
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        current(quiet=True)
        rows = query_runs(control_engine(), RunFilter(message_ids=ids), limit=len(ids))
        if len(rows) == len(ids) and all(r["status"] == "FINISHED" for r in rows):
            break
        time.sleep(0.5)
    click.echo(plain_table(rows, ("id", "actor_name", "tenant_id", "status", "resolution", "attempts", "wait_ms",
                                  "run_ms", "kwargs", "result")))
    unfinished = [r for r in rows if r["status"] != "FINISHED"]
    if unfinished or len(rows) < len(ids):
        click.echo(f"demo: {len(ids) - len(rows) + len(unfinished)} runs did not finish within {timeout:g}s: "
                   "is a worker running?", err=True)
        return 1
    return 0


def register(group: click.Group) -> None:
    group.add_command(demo)
