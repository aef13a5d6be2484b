"""The case-management actors (names kept from the seed's job table and cron runner).

Every actor is per tenant (one agency = one tenant database): the tenant comes from the
JobContext, the actor opens a tenant session and calls one domain function.
EMAIL_SYNC_PERIODIC is the scheduler's dispatcher (periodic/schedules.py) and fans out
to EMAIL_SYNC_AGENCY; both sync actors chain EMAIL_MATCHING through dramatiq's
Callbacks middleware (``on_success``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import dramatiq

from actors.casemgmt import aggregations, cleanup, health, matching, notifications, sync
from jobcore.context import current_context, current_message_id
from jobcore.errors import TenantError
from jobcore.settings import get_settings
from tenancy.session import tenant_session

log = logging.getLogger(__name__)

# Two queues so a burst of mail syncs (every agency at once, each possibly thousands of
# messages) never delays reminders and the nightly jobs; workers consume both by default.
EMAIL_QUEUE = "casemgmt_email"
QUEUE = "casemgmt"
MINUTE = 60_000


def _tenant_id(fallback: Any = None) -> int:
    tenant_id = current_context().tenant_id
    if tenant_id is None and fallback is not None:
        tenant_id = int(fallback)
    if tenant_id is None:
        raise TenantError("case-management jobs need tenant_id in their JobContext")
    return tenant_id


def _admin_id(admin_id: int | None) -> int:
    value = admin_id if admin_id is not None else current_context().admin_id
    if value is None:
        raise TenantError("this job needs an admin_id (argument or JobContext)")
    return int(value)


@dramatiq.actor(actor_name="EMAIL_SYNC_AGENCY", queue_name=EMAIL_QUEUE, on_success="EMAIL_MATCHING",
                time_limit=30 * MINUTE, max_age=60 * MINUTE)
def email_sync_agency() -> dict[str, Any]:
    """Sync every connected mailbox of the agency; a failing mailbox is recorded on its row
    and listed in ``failed``, and the others are synced (then EMAIL_MATCHING runs)."""
    tenant_id = _tenant_id()
    with tenant_session(tenant_id) as session:
        results = sync.sync_agency(session)
    return {"tenant_id": tenant_id, "mailboxes": len(results),
            "stored": sum(r.stored for r in results), "skipped": sum(r.status == "skipped" for r in results),
            "failed": [r.mailbox_id for r in results if r.status == "failed"]}


@dramatiq.actor(actor_name="EMAIL_SYNC_ADMIN", queue_name=EMAIL_QUEUE, on_success="EMAIL_MATCHING",
                time_limit=30 * MINUTE)
def email_sync_admin(admin_id: int | None = None) -> dict[str, Any]:
    """Sync one admin's mailbox (a disconnected one ends cleanly as ``skipped``)."""
    tenant_id = _tenant_id()
    with tenant_session(tenant_id) as session:
        result = sync.sync_admin(session, _admin_id(admin_id))
    return {"tenant_id": tenant_id, **result.to_dict()}


@dramatiq.actor(actor_name="EMAIL_SYNC_DISCONNECT", queue_name=EMAIL_QUEUE)
def email_sync_disconnect(admin_id: int | None = None) -> dict[str, Any]:
    """Disconnect an admin's mailbox: no more syncs, credential deleted, mail kept."""
    tenant_id = _tenant_id()
    with tenant_session(tenant_id) as session:
        changed = sync.disconnect_mailbox(session, _admin_id(admin_id))
    return {"tenant_id": tenant_id, "disconnected": changed}


@dramatiq.actor(actor_name="EMAIL_MATCHING", queue_name=EMAIL_QUEUE, time_limit=30 * MINUTE)
def email_matching(message_data: dict[str, Any] | None = None, result: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Match the agency's unmatched emails to cases and contacts.

    Sent directly (tenant in the JobContext) or as the ``on_success`` callback of a sync,
    whose message and result carry the tenant."""
    fallback = (result or {}).get("tenant_id")
    if fallback is None and message_data:
        fallback = ((message_data.get("options") or {}).get("job_context") or {}).get("tenant_id")
    tenant_id = _tenant_id(fallback)
    with tenant_session(tenant_id) as session:
        outcome = matching.match_emails(session)
    return {"tenant_id": tenant_id, **outcome.to_dict()}


@dramatiq.actor(actor_name="agency_notifications", queue_name=QUEUE, time_limit=10 * MINUTE)
def agency_notifications() -> dict[str, Any]:
    """Send the agency's due reminders and upcoming-event notices over SMTP, once each."""
    tenant_id = _tenant_id()
    settings = get_settings()
    with tenant_session(tenant_id) as session:
        result = notifications.run_notifications(session, notifications.smtp_from_settings(settings),
                                                 datetime.now(UTC), sender=settings.smtp_from,
                                                 tenant_tag=f"tenant{tenant_id}")
    return result.to_dict()


@dramatiq.actor(actor_name="requeue_failed_agency_notifications", queue_name=QUEUE, max_retries=0)
def requeue_failed_agency_notifications(notification_ids: list[int] | None = None) -> dict[str, Any]:
    """Operator: give notifications that used up their attempts fresh ones (after fixing
    the address or mailbox); the next notifications run sends them."""
    with tenant_session(_tenant_id()) as session:
        return {"requeued": notifications.requeue_failed_notifications(session, notification_ids)}


@dramatiq.actor(actor_name="agency_health_checks", queue_name=QUEUE, time_limit=60 * MINUTE)
def agency_health_checks() -> dict[str, Any]:
    """Run the data-integrity checks and store their results for this run."""
    tenant_id = _tenant_id()
    with tenant_session(tenant_id) as session:
        run_id = health.run_health_checks(session, datetime.now(UTC),
                                          job_message_id=current_message_id())
        failed = session.get(health.HealthCheckRun, run_id)
    return {"run_id": run_id, "checks_failed": failed.checks_failed if failed else None}


@dramatiq.actor(actor_name="agency_overnight_aggregations", queue_name=QUEUE, time_limit=60 * MINUTE)
def agency_overnight_aggregations() -> dict[str, Any]:
    """Recompute the agency's daily statistics for the last complete days."""
    with tenant_session(_tenant_id()) as session:
        rows = aggregations.run_overnight_aggregations(session, datetime.now(UTC))
    return {"rows": rows}


@dramatiq.actor(actor_name="agency_cleanup", queue_name=QUEUE, time_limit=20 * MINUTE)
def agency_cleanup() -> dict[str, list[list[Any]]]:
    """Delete the agency's expired sessions and tokens in batches."""
    with tenant_session(_tenant_id()) as session:
        deleted = cleanup.run_cleanup(session, datetime.now(UTC))
    # Pairs, not a mapping: a result key named "tokens" would be masked by the redactor.
    return {"deleted": [[table, n] for table, n in deleted.items()]}
