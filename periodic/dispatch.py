"""The periodic dispatcher actors, one per schedule (declared from the schedule data).

The scheduler sends a dispatcher once per tick; the dispatcher fans the schedule's
target actor out over the tenants of its product (``fan_out="platform"``: one run with no
tenant, plus one per tenant of the product with its own storage). A target that is not declared when
the tick runs marks that tick FAILED (error recorded) and is not retried. Fan-out
message ids are derived from (tick, tenant), so a retried or redelivered dispatcher
never sends a tenant's run twice: tenants already linked to the tick are skipped, and
the broker does not enqueue a message id the ledger already knows.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from jobcore.broker import PlatformRedisBroker
from jobcore.context import current_context
from jobcore.errors import UnknownActor
from periodic.cadence import EverySeconds
from periodic.schedules import FAN_OUT_PLATFORM, Schedule, all_schedules
from periodic.ticks import mark_failed, record_runs, tick_message_ids
from tenancy.registry import list_tenants

log = logging.getLogger(__name__)

TICK_NAMESPACE = uuid.UUID("5d8a1f3e-4b59-4a1c-9a52-0c7f6c0e2b11")


def dispatch(broker: PlatformRedisBroker, schedule: Schedule, tick_id: int | None,
             dispatcher_message_id: str | None = None, scheduled_at: str | None = None) -> dict[str, Any]:
    """Fan ``schedule.target`` out over its tenants for one tick; returns a summary. Each
    run's JobContext ``extra`` names the schedule, the tick and its nominal time
    (``scheduled_at``), so a run caught up late still knows which day it is for."""
    if tick_id is not None and dispatcher_message_id is not None:
        # The scheduler links its message after the send; link it here too, so a
        # scheduler that dies between the send and that write leaves no unlinked run.
        record_runs(tick_id, [dispatcher_message_id], "dispatcher")

    try:
        target = broker.get_actor(schedule.target)
    except Exception:
        # A target missing at tick time (not deployed on this worker, renamed) fails this
        # tick, visibly: the tick row turns FAILED with the reason, the dispatcher run is
        # an ERROR run (not retried: ``throws``), and the scheduler carries on.
        error = UnknownActor(f"schedule {schedule.name}: target actor {schedule.target!r} is not declared")
        if tick_id is not None:
            mark_failed(tick_id, str(error))
        raise error from None
    done = tick_message_ids(tick_id) if tick_id is not None else set()
    base = current_context()
    messages = []
    skipped = 0
    tenants = list_tenants(product=schedule.product)
    # (key of the message id, tenant id or None for the platform run)
    runs: list[tuple[str, int | None]]
    if schedule.fan_out == FAN_OUT_PLATFORM:
        runs = [("platform", None)] + [(str(t.id), t.id) for t in tenants if t.has_own_storage]
    else:
        runs = [(str(t.id), t.id) for t in tenants]
    for key, tenant_id in runs:
        message_id = str(uuid.uuid5(TICK_NAMESPACE, f"{tick_id}:{key}")) if tick_id else str(uuid.uuid4())
        if message_id in done:
            skipped += 1
            continue
        ctx = (base.with_tenant(tenant_id) if tenant_id is not None else base).to_dict()
        ctx["extra"] = {**ctx.get("extra", {}), "schedule": schedule.name, "tick_id": tick_id}
        if scheduled_at:
            ctx["extra"]["scheduled_at"] = scheduled_at
        message = target.message_with_options(job_context=ctx)
        messages.append(message.copy(message_id=message_id))
    sent = broker.enqueue_many(messages)
    if tick_id is not None:
        record_runs(tick_id, [m.message_id for m in sent], "tenant")
    return {"schedule": schedule.name, "tick_id": tick_id, "tenants": len(sent), "skipped": skipped}


def _declare(broker: PlatformRedisBroker, schedule: Schedule) -> None:
    def run() -> dict[str, Any]:
        message = CurrentMessage.get_current_message()
        if message is None:
            return dispatch(broker, schedule, None)
        return dispatch(broker, schedule, message.options.get("schedule_tick_id"), message.message_id,
                        message.options.get("scheduled_at"))

    run.__name__ = run.__qualname__ = f"dispatch_{schedule.name}"
    options: dict[str, Any] = {"periodic": schedule.cadence, "throws": (UnknownActor,)}
    if not isinstance(schedule.cadence, EverySeconds):
        # A daily/weekly/3-day tick must run once however late it is delivered (workers
        # down for hours): the platform's default max_age would expire it. Interval ticks
        # keep the default: a newer tick comes within minutes and does the same work.
        options["max_age"] = 0
    dramatiq.actor(actor_name=schedule.dispatcher, queue_name="periodic", broker=broker, **options)(run)


def declare_dispatchers(broker: PlatformRedisBroker) -> None:
    """Declare one dispatcher actor per schedule on ``broker`` (the composition root does)."""
    for schedule in all_schedules():
        if schedule.dispatcher not in broker.actors:
            _declare(broker, schedule)
