"""Carries the :class:`~jobcore.context.JobContext` from ``send()`` into the actor."""

from __future__ import annotations

from typing import Any

from dramatiq import Middleware

from jobcore.context import (
    OPTION,
    JobContext,
    _enter_job,
    _leave_job,
    ambient_context,
    current_context,
    current_message_id,
)
from jobcore.message_state import state


class JobContextMiddleware(Middleware):
    """Attaches the ambient context at enqueue; exposes it to the actor while it runs."""

    @property
    def actor_options(self) -> set[str]:
        return {OPTION}

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        value = message.options.get(OPTION)
        if isinstance(value, JobContext):
            message.options[OPTION] = value.to_dict()
        elif value is None:
            # An explicit ``with job_context(...)`` wins; otherwise a message sent from
            # inside a job (callbacks, pipelines, fan-outs) inherits the running job's
            # context, so e.g. EMAIL_MATCHING chained to a sync keeps its tenant.
            inherited = ambient_context() or (current_context() if current_message_id() else None)
            if inherited is not None and inherited.to_dict():
                message.options[OPTION] = inherited.to_dict()

    def before_process_message(self, broker: Any, message: Any) -> None:
        ctx = JobContext.from_dict(message.options.get(OPTION))
        state(message).context_tokens = _enter_job(ctx, message.message_id)

    def _leave(self, message: Any) -> None:
        st = state(message)
        if st.context_tokens is not None:
            _leave_job(st.context_tokens)
            st.context_tokens = None

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        self._leave(message)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self._leave(message)
