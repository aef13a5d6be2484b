"""Fan-out: one message per active tenant, each its own JobRun.

The fan-out never touches a tenant database: it reads the registry and enqueues, so a
tenant whose database is down or slow only fails (or slows) its own run, in whichever
worker thread picks it up, never the others or the tick that fanned out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dramatiq
from dramatiq import Actor, Message

from jobcore.broker import platform_broker
from jobcore.context import OPTION, JobContext, ambient_context, current_context
from jobcore.errors import UnknownActor
from tenancy.registry import get_tenant, list_tenants, require_usable


def _resolve(actor: Actor[Any, Any] | str) -> Actor[Any, Any]:
    if not isinstance(actor, str):
        return actor
    try:
        return dramatiq.get_broker().get_actor(actor)
    except Exception:
        raise UnknownActor(f"unknown actor {actor!r}") from None


def _base_context(context: JobContext | None) -> JobContext:
    if context is not None:
        return context
    return ambient_context() or current_context()


def fan_out(actor: Actor[Any, Any] | str, *, product: str | None = None, args: Sequence[Any] = (),
            kwargs: Mapping[str, Any] | None = None, context: JobContext | None = None,
            extra: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None
            ) -> list[Message[Any]]:
    """Send ``actor`` once per active, fully provisioned tenant (of ``product``), with the
    tenant in the JobContext; each chunk of messages is enqueued with their PENDING events."""
    target = _resolve(actor)
    base = _base_context(context)
    if extra:
        base = JobContext(base.tenant_id, base.user_id, base.admin_id, base.request_id, {**base.extra, **extra})
    messages = [
        target.message_with_options(args=tuple(args), kwargs=dict(kwargs or {}),
                                    **{OPTION: base.with_tenant(t.id).to_dict(), **(options or {})})
        for t in list_tenants(product=product)
    ]
    return platform_broker(target.broker).enqueue_many(messages)


def send_for_tenant(actor: Actor[Any, Any] | str, tenant_id: int, *args: Any, **kwargs: Any) -> Message[Any]:
    """On-demand run for one tenant (e.g. EMAIL_SYNC_AGENCY for one agency)."""
    target = _resolve(actor)
    require_usable(get_tenant(tenant_id))
    ctx = _base_context(None).with_tenant(tenant_id)
    return target.send_with_options(args=args, kwargs=kwargs, job_context=ctx.to_dict())
