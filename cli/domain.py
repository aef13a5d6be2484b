"""Operator commands of the domain jobs: Huntington re-sends, report and notification
requeues. Money is only ever moved by the money actors: these commands enqueue them."""

from __future__ import annotations

import click

from cli.common import platform
from cli.main import json_option
from cli.output import emit, emit_json


def _operator(operator: str | None) -> str:
    from jobplatform.root import default_operator

    return operator or default_operator()


@click.command("huntington-unsent")
@click.argument("tenant_id", type=int)
@json_option
def huntington_unsent(tenant_id: int, as_json: bool) -> None:
    """A tenant's Huntington batches with items not sent (PENDING, FAILED)."""
    from actors.escrow.operator import huntington_unsent as unsent

    platform()
    out = unsent(tenant_id)
    if as_json:
        emit_json(out)
    else:
        emit(out["batches"], list(out["batches"][0]) if out["batches"] else ["batch_id"], False)


@click.command("huntington-resend")
@click.argument("tenant_id", type=int)
@click.argument("batch_id", type=int)
@click.option("--operator", help="who is acting (default: the login user); recorded with the re-send")
@click.option("--reason")
@click.option("--include-rejected", is_flag=True, help="also items the bank rejected (after fixing their data)")
@click.option("--dry-run", is_flag=True, help="list what would be re-sent, send nothing")
def huntington_resend(tenant_id: int, batch_id: int, operator: str | None, reason: str | None,
                      include_rejected: bool, dry_run: bool) -> None:
    """Re-send a batch's unsent items under their existing idempotency keys (enqueues the
    resend_huntington_batch actor; the bank is never called from here)."""
    from actors.escrow.operator import resend_huntington_batch

    platform()
    emit_json(resend_huntington_batch(tenant_id, batch_id, operator=_operator(operator), reason=reason,
                                      include_rejected=include_rejected, dry_run=dry_run))


@click.command("reports-requeue")
@click.argument("tenant_id", type=int)
@click.argument("request_ids", type=int, nargs=-1)
@click.option("--operator", help="who is acting (default: the login user)")
def reports_requeue(tenant_id: int, request_ids: tuple[int, ...], operator: str | None) -> None:
    """Put report requests that failed for good back in the queue with fresh attempts."""
    from actors.escrow.operator import requeue_failed_report_requests

    platform()
    emit_json(requeue_failed_report_requests(tenant_id, operator=_operator(operator),
                                             request_ids=list(request_ids) or None))


@click.command("notifications-requeue")
@click.argument("tenant_id", type=int)
@click.argument("notification_ids", type=int, nargs=-1)
def notifications_requeue(tenant_id: int, notification_ids: tuple[int, ...]) -> None:
    """Give a tenant's notifications that failed for good fresh attempts (escrow outbox or
    agency notifications, by the tenant's product)."""
    from tenancy.fanout import send_for_tenant
    from tenancy.registry import get_tenant

    platform()
    actor = {"escrow": "requeue_failed_escrow_notifications",
             "casemgmt": "requeue_failed_agency_notifications"}[get_tenant(tenant_id).product]
    message = send_for_tenant(actor, tenant_id, list(notification_ids) or None)
    click.echo(f"sent {actor} for tenant {tenant_id} as message {message.message_id}")


def register(group: click.Group) -> None:
    for command in (huntington_unsent, huntington_resend, reports_requeue, notifications_requeue):
        group.add_command(command)
