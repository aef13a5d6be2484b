"""The escrow actors: thin wrappers that open the tenant's session, build the clients
from settings and call the domain function. Names are the seed's (schedules target them)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from zoneinfo import ZoneInfo

import dramatiq

from actors.escrow.aws_status import make_http_session, make_s3_client, run_status_check, storage_settings
from actors.escrow.balance import check_minimum_balances
from actors.escrow.bank_gateway import BankGatewayClient
from actors.escrow.dr_approval import approve_due_requests
from actors.escrow.huntington import BatchBusy, process_batch
from actors.escrow.huntington_heal import heal_batches
from actors.escrow.huntington_ops import resend_unsent_items
from actors.escrow.mail import SmtpSender, requeue_failed_notifications
from actors.escrow.offsite import mark_users_offsite
from actors.escrow.reminders import send_balance_reminders, send_close_reminders
from actors.escrow.reports import process_reports, requeue_failed_reports
from actors.escrow.tenant import current_tenant_id, tenant_session
from jobcore.context import current_context, current_message_id
from jobcore.settings import get_settings
from periodic.schedules import ET
from tenancy.registry import get_tenant

log = logging.getLogger(__name__)

QUEUE = "escrow"
#: Money moves on its own queue, so a backlog of reports never delays a payment batch.
PAYMENTS_QUEUE = "escrow_payments"
MINUTE = 60_000


def _retry_only_when_busy(retries: int, exception: BaseException) -> bool:
    """Money actors are never retried blindly; only a run that found its batch locked by
    another live run (nothing was sent) is retried, after BatchBusy's delay."""
    return isinstance(exception, BatchBusy) and retries < get_settings().huntington_busy_max_retries


#: Options of the actors that move money: never expired by queue age (a worker outage of
#: hours must delay a payment, not drop it), stopped by a revoke only at their own
#: checkpoints between items, never retried except when BUSY, never retried on a time-out
#: (the outcome is unknown: auto-heal decides).
MONEY: dict[str, Any] = {"queue_name": PAYMENTS_QUEUE, "max_age": 0, "interruptible": False, "max_retries": 0,
                         "retry_on_timeout": False, "retry_when": _retry_only_when_busy}


def _today() -> dt.date:
    """The day this run is for, in the schedules' time zone (the seed's dates are Eastern):
    its tick's day when a schedule sent it (a tick caught up after midnight still does its
    own day's reminders), else today."""
    scheduled = current_context().extra.get("scheduled_at")
    if scheduled:
        try:
            return dt.datetime.fromisoformat(str(scheduled)).astimezone(ZoneInfo(ET)).date()
        except ValueError:
            log.warning("unreadable scheduled_at %r in the job context; using today", scheduled)
    return dt.datetime.now(ZoneInfo(ET)).date()


@dramatiq.actor(actor_name="job_dr_approval", queue_name=QUEUE, time_limit=30 * MINUTE)
def job_dr_approval() -> dict[str, Any]:
    """Auto-approve every expired auto-authorize window and notify the parties."""
    settings = get_settings()
    with tenant_session(current_tenant_id()) as session:
        result = approve_due_requests(session, SmtpSender.from_settings(), batch_size=settings.dr_approval_batch_size)
    # Counts, not id lists: a run can approve thousands (the ids are in the tenant database).
    return {"approved": len(result.approved), "skipped": len(result.skipped), "notified": result.notified,
            "emailed": result.emailed, "batches": result.batches}


@dramatiq.actor(actor_name="job_case_close_reminders", queue_name=QUEUE)
def job_case_close_reminders() -> dict[str, Any]:
    """Remind Escrow Specialists of the cases closing today."""
    with tenant_session(current_tenant_id()) as session:
        return {"reminded": send_close_reminders(session, SmtpSender.from_settings(), today=_today())}


@dramatiq.actor(actor_name="job_account_balance_check", queue_name=QUEUE)
def job_account_balance_check() -> dict[str, Any]:
    """Record an alert for each active case below its minimum balance."""
    with tenant_session(current_tenant_id()) as session:
        return {"alerted": check_minimum_balances(session, today=_today())}


@dramatiq.actor(actor_name="job_account_balance_reminders", queue_name=QUEUE)
def job_account_balance_reminders() -> dict[str, Any]:
    """Remind Case Managers and Admins of cases below their minimum balance."""
    with tenant_session(current_tenant_id()) as session:
        return {"queued": send_balance_reminders(session, SmtpSender.from_settings(), today=_today())}


@dramatiq.actor(actor_name="job_report_generation", queue_name=QUEUE)
def job_report_generation() -> dict[str, Any]:
    """Work through the report queue (oldest first) and e-mail each report."""
    settings = get_settings()
    with tenant_session(current_tenant_id()) as session:
        run = process_reports(session, SmtpSender.from_settings(), max_attempts=settings.report_max_attempts,
                              backoff_s=settings.report_retry_backoff_s)
    return {"emailed": run.emailed, "lost": run.lost}


@dramatiq.actor(actor_name="requeue_failed_report_requests", queue_name=QUEUE, max_retries=0)
def requeue_failed_report_requests(operator: str, request_ids: list[int] | None = None) -> dict[str, Any]:
    """Operator: put report requests that failed for good (status 4) back in the queue."""
    with tenant_session(current_tenant_id()) as session:
        return {"requeued": requeue_failed_reports(session, operator=operator, request_ids=request_ids)}


@dramatiq.actor(actor_name="requeue_failed_escrow_notifications", queue_name=QUEUE, max_retries=0)
def requeue_failed_escrow_notifications(notification_ids: list[int] | None = None) -> dict[str, Any]:
    """Operator: put outbox notifications that were refused on every attempt (FAILED) back
    in the outbox, once the address or mailbox is fixed; the next run that delivers the
    outbox sends them."""
    with tenant_session(current_tenant_id()) as session:
        return {"requeued": requeue_failed_notifications(session, notification_ids)}


@dramatiq.actor(actor_name="job_aws_status_check", queue_name=QUEUE, max_retries=0)
def job_aws_status_check() -> dict[str, Any]:
    """Probe S3 and CloudFront and post the status to the dashboard (runs every 5 minutes,
    so a failed run is not retried: the next one reports fresher data). Without a tenant:
    the platform's storage (what the schedule sends once per tick); for a tenant: its own
    storage if it has one (the schedule sends those too), else the platform's."""
    tenant_id = current_context().tenant_id
    if tenant_id is None:
        with make_http_session() as http:
            status = run_status_check(None, s3=make_s3_client(), http=http)
    else:
        settings = storage_settings(get_settings(), dict(get_tenant(tenant_id).storage))
        with tenant_session(tenant_id) as session, make_http_session(settings) as http:
            status = run_status_check(session, s3=make_s3_client(settings), http=http, settings=settings,
                                      tenant_id=tenant_id)
    return {"tenant_id": tenant_id, "s3_ok": status.s3_ok, "cloudfront_ok": status.cloudfront_ok}


@dramatiq.actor(actor_name="job_user_offsite_tracking", queue_name=QUEUE)
def job_user_offsite_tracking() -> dict[str, Any]:
    """Mark all users off-site and clear the viewing caches."""
    with tenant_session(current_tenant_id()) as session:
        r = mark_users_offsite(session)
    return {"users": r.users_marked, "viewing_dr": r.viewing_dr_cleared, "viewing_payment": r.viewing_payment_cleared}


@dramatiq.actor(actor_name="PROCESS_HUNTINGTON_BATCH", time_limit=30 * MINUTE, **MONEY)
def process_huntington_batch(batch_id: int) -> dict[str, Any]:
    """Send a batch's transfers to the bank, exactly once per item. Money-moving: never
    expired, never retried except when another run holds the batch (BatchBusy: retried
    later, recorded on the batch and in the ledger); an unknown outcome is settled by
    auto-heal; a revoke stops it between items."""
    settings = get_settings()
    with tenant_session(current_tenant_id()) as session:
        outcome = process_batch(session, int(batch_id), BankGatewayClient.from_settings(),
                                lock_wait=settings.huntington_lock_wait_s,
                                busy_retry_ms=settings.huntington_busy_retry_ms)
    return {"batch_id": outcome.batch_id, "status": outcome.status, "completed": outcome.completed}


@dramatiq.actor(actor_name="resend_huntington_batch", time_limit=30 * MINUTE, **MONEY)
def resend_huntington_batch(batch_id: int, operator: str, reason: str | None = None,
                            include_rejected: bool = False) -> dict[str, Any]:
    """Operator: re-send a batch's unsent items under their existing idempotency keys (an
    item the bank already has is completed, not re-sent), with an audit record."""
    settings = get_settings()
    with tenant_session(current_tenant_id()) as session:
        result = resend_unsent_items(session, int(batch_id), BankGatewayClient.from_settings(), operator=operator,
                                     reason=reason, include_rejected=include_rejected,
                                     job_message_id=current_message_id(),
                                     lock_wait=settings.huntington_lock_wait_s,
                                     busy_retry_ms=settings.huntington_busy_retry_ms)
    return result.to_dict()


@dramatiq.actor(actor_name="auto_heal_huntington_batches", queue_name=PAYMENTS_QUEUE, max_retries=0,
                interruptible=False, time_limit=5 * MINUTE)
def auto_heal_huntington_batches(grace_seconds: float = 60.0) -> dict[str, Any]:
    """Reconcile false failures with the bank (per tenant; dispatched every minute by
    ``auto_heal_huntington_batches_periodic``). Stopped by a revoke only between items."""
    with tenant_session(current_tenant_id()) as session:
        r = heal_batches(session, BankGatewayClient.from_settings(), grace_seconds=grace_seconds)
    return {"completed": r.completed, "not_sent": r.not_sent, "undecided": r.undecided, "skipped": r.skipped}
