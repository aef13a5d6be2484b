"""``jobctl queues | dead-letters``: what Redis holds."""

from __future__ import annotations

import click

from cli.common import platform
from cli.main import json_option, operator_option
from cli.output import emit, error, track
from jobcore.db import control_engine
from jobcore.errors import PlatformError


@click.command()
@json_option
def queues(as_json: bool) -> None:
    """Depth of each queue: ready, delayed (.DQ), dead letters (.XQ), stored payloads."""
    from jobcore.queues import queue_depths

    broker = platform().broker
    emit(queue_depths(broker.client, broker.keys, broker.get_declared_queues()),
         ("queue", "ready", "delayed", "dead", "stored"), as_json)


@click.command("dead-letters")
@click.argument("queue", default="default")
@click.option("--requeue", metavar="ID|all", help="requeue one (redis or message id) or all, as new runs")
@click.option("--discard", metavar="ID|all", help="delete one (redis or message id) or all")
@operator_option
@json_option
def dead_letters(queue: str, requeue: str | None, discard: str | None, operator: str | None, as_json: bool) -> None:
    """List a queue's dead-lettered messages (arguments redacted), or requeue / discard them."""
    from jobplatform.root import default_operator
    from ledger.operations import dead_letters as list_dead
    from ledger.operations import discard_dead_letter, requeue_dead_letter

    if requeue and discard:
        raise click.UsageError("--requeue and --discard are exclusive")
    broker = platform().broker
    rows = list_dead(broker, queue)
    ref = requeue or discard
    if not ref:
        emit(rows, ("redis_id", "message_id", "actor", "args", "kwargs", "undecodable"), as_json)
        return
    selected = [r for r in rows if ref == "all" or ref in (r["redis_id"], r["message_id"])]
    if not selected:
        raise PlatformError(f"no dead letter {ref} on queue {queue}")
    who = operator or default_operator()
    failed = 0
    for r in track(selected, "requeueing" if requeue else "discarding", len(selected)):
        try:
            if requeue:
                new = requeue_dead_letter(broker, control_engine(), queue, r["redis_id"], operator=who)
                click.echo(f"requeued {r['redis_id']} ({r['actor']} as new message {new.message_id})")
            else:
                discard_dead_letter(broker, control_engine(), queue, r["redis_id"], operator=who)
                click.echo(f"discarded {r['redis_id']} ({r['actor']})")
        except PlatformError as exc:
            failed += 1
            error(f"{r['redis_id']}: {exc}")
    if failed:
        raise click.exceptions.Exit(1)


def register(group: click.Group) -> None:
    group.add_command(queues)
    group.add_command(dead_letters)
