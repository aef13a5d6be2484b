"""JobContext: who and what a job runs for, carried from ``send()`` into the actor.

It replaces Flask's ``g``/``session`` from the legacy jobs. A caller either passes it
explicitly (``actor.send_with_options(args=..., job_context=ctx.to_dict())``) or sets
it ambiently for a block (``with job_context(tenant_id=3): actor.send(...)``); inside
the actor, :func:`current_context` returns it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

OPTION = "job_context"

_ambient: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("ambient_job_context", default=None)
_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("current_job_context", default=None)
_current_message_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_message_id", default=None)


@dataclass(frozen=True)
class JobContext:
    """Serializable context of one job. ``extra`` holds JSON-safe caller-specific keys."""

    tenant_id: int | None = None
    user_id: int | None = None
    admin_id: int | None = None
    request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The message-option form: only the keys that are set."""
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> JobContext:
        """Rebuild from a message option; unknown keys go to ``extra`` (forward compatible)."""
        if not data:
            return cls()
        known = {"tenant_id", "user_id", "admin_id", "request_id"}
        extra = dict(data.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in known and k != "extra"})
        tenant = data.get("tenant_id")
        return cls(
            tenant_id=int(tenant) if tenant is not None else None,
            user_id=data.get("user_id"),
            admin_id=data.get("admin_id"),
            request_id=data.get("request_id"),
            extra=extra,
        )

    def with_tenant(self, tenant_id: int) -> JobContext:
        """A copy of this context for another tenant (used by fan-out)."""
        return replace(self, tenant_id=tenant_id)


@contextmanager
def job_context(ctx: JobContext | None = None, **fields: Any) -> Iterator[JobContext]:
    """Set the ambient context for every message sent inside the block."""
    value = ctx if ctx is not None else JobContext(**fields)
    token = _ambient.set(value)
    try:
        yield value
    finally:
        _ambient.reset(token)


def ambient_context() -> JobContext | None:
    """The context set by an enclosing :func:`job_context` block, if any."""
    return _ambient.get()


def current_context() -> JobContext:
    """The context of the job running in this thread (empty outside a job)."""
    return _current.get() or JobContext()


def current_message_id() -> str | None:
    """The dramatiq message id of the job running in this thread."""
    return _current_message_id.get()


def _enter_job(ctx: JobContext, message_id: str) -> tuple[contextvars.Token[Any], contextvars.Token[Any]]:
    return _current.set(ctx), _current_message_id.set(message_id)


def _leave_job(tokens: tuple[contextvars.Token[Any], contextvars.Token[Any]]) -> None:
    _current.reset(tokens[0])
    _current_message_id.reset(tokens[1])
