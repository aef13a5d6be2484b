"""The escrow actors: thin wrappers that open the tenant's session, build the clients
from settings and call the domain function. Names are the seed's (schedules target them)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import dramatiq

from actors.escrow.aws_status import make_http_session, make_s3_client, run_status_check
from actors.escrow.balance import check_minimum_balances
from actors.escrow.bank_gateway import BankGatewayClient
from actors.escrow.dr_approval import approve_due_requests
from actors.escrow.huntington import heal_batches, process_batch
from actors.escrow.mail import SmtpSender
from actors.escrow.offsite import mark_users_offsite
from actors.escrow.reminders import send_balance_reminders, send_close_reminders
from actors.escrow.reports import process_reports
from actors.escrow.tenant import current_tenant_id, tenant_session
from periodic.schedules import ET

QUEUE = "escrow"
#: Money moves on its own queue, so a backlog of reports never delays a payment batch.
PAYMENTS_QUEUE = "escrow_payments"


def _today() -> dt.date:
    """Today in the schedules' time zone (the seed's dates are Eastern)."""
    return dt.datetime.now(ZoneInfo(ET)).date()


@dramatiq.actor(actor_name="job_dr_approval", queue_name=QUEUE)
def job_dr_approval() -> dict[str, Any]:
    """Auto-approve expired auto-authorize windows and notify the parties."""
    with tenant_session(current_tenant_id()) as session:
        result = approve_due_requests(session, SmtpSender.from_settings())
    return {"approved": result.approved, "skipped": result.skipped, "emailed": result.emailed}


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
    with tenant_session(current_tenant_id()) as session:
        run = process_reports(session, SmtpSender.from_settings())
    return {"emailed": run.emailed, "lost": run.lost}


@dramatiq.actor(actor_name="job_aws_status_check", queue_name=QUEUE, max_retries=0)
def job_aws_status_check() -> dict[str, Any]:
    """Probe S3 and CloudFront and post the status to the dashboard (runs every 5 minutes,
    so a failed run is not retried: the next one reports fresher data)."""
    tenant_id = current_tenant_id()
    with tenant_session(tenant_id) as session, make_http_session() as http:
        status = run_status_check(session, s3=make_s3_client(), http=http, tenant_id=tenant_id)
    return {"s3_ok": status.s3_ok, "cloudfront_ok": status.cloudfront_ok}


@dramatiq.actor(actor_name="job_user_offsite_tracking", queue_name=QUEUE)
def job_user_offsite_tracking() -> dict[str, Any]:
    """Mark all users off-site and clear the viewing caches."""
    with tenant_session(current_tenant_id()) as session:
        r = mark_users_offsite(session)
    return {"users": r.users_marked, "viewing_dr": r.viewing_dr_cleared, "viewing_payment": r.viewing_payment_cleared}


@dramatiq.actor(actor_name="PROCESS_HUNTINGTON_BATCH", queue_name=PAYMENTS_QUEUE, max_retries=0,
                retry_on_timeout=False, time_limit=30 * 60_000)
def process_huntington_batch(batch_id: int) -> dict[str, Any]:
    """Send a batch's transfers to the bank, exactly once per item. Money-moving: never
    retried by the broker; an unknown outcome is settled by auto-heal."""
    with tenant_session(current_tenant_id()) as session:
        outcome = process_batch(session, int(batch_id), BankGatewayClient.from_settings())
    return {"batch_id": outcome.batch_id, "status": outcome.status, "completed": outcome.completed,
            "busy": outcome.busy}


@dramatiq.actor(actor_name="auto_heal_huntington_batches", queue_name=PAYMENTS_QUEUE, max_retries=0,
                time_limit=5 * 60_000)
def auto_heal_huntington_batches(grace_seconds: float = 60.0) -> dict[str, Any]:
    """Reconcile false failures with the bank (per tenant; dispatched every minute by
    ``auto_heal_huntington_batches_periodic``)."""
    with tenant_session(current_tenant_id()) as session:
        r = heal_batches(session, BankGatewayClient.from_settings(), grace_seconds=grace_seconds)
    return {"completed": r.completed, "not_sent": r.not_sent, "undecided": r.undecided}
