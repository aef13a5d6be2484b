"""Retry policy: the seed's default is at most 2 retries, exponential back-off starting at
2 s and capped at 8 s; every actor can override it.

A retry is the same run: the ledger keeps one row and adds a ``job_errors`` row per
failed attempt. Money-moving actors set ``max_retries=0`` and ``retry_on_timeout=False``:
a ``TimeLimitExceeded`` there means the outcome is unknown (the bank may have the
transfer), so it is never retried blindly; reconciliation decides.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from dramatiq import Middleware
from dramatiq.errors import Retry
from dramatiq.middleware.time_limit import TimeLimitExceeded

from jobcore.errors import JobRevoked
from jobcore.message_state import state

log = logging.getLogger(__name__)


def backoff_ms(retries_so_far: int, min_backoff: int, max_backoff: int) -> int:
    """Delay before retry number ``retries_so_far + 1``: ``min_backoff * 2**n``, capped at
    ``max_backoff``, plus up to 10% jitter (still capped) so failed fan-outs do not retry
    in lock-step."""
    base = min(min_backoff * (2 ** retries_so_far), max_backoff)
    return min(int(base * (1 + random.uniform(0, 0.1))), max_backoff)


class RetryPolicy(Middleware):
    """Decides, after a failed attempt, between retry (re-enqueue with back-off) and final
    failure, and records the decision for the ledger and the error events."""

    def __init__(self, *, max_retries: int = 2, min_backoff: int = 2000, max_backoff: int = 8000) -> None:
        self.max_retries = max_retries
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff

    @property
    def actor_options(self) -> set[str]:
        return {"max_retries", "min_backoff", "max_backoff", "retry_when", "throws", "retry_on_timeout"}

    def _option(self, message: Any, actor: Any, name: str, default: Any) -> Any:
        if name in message.options:
            return message.options[name]
        return actor.options.get(name, default) if actor is not None else default

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        if exception is None:
            return
        st = state(message)
        actor = broker.actors.get(message.actor_name)
        if isinstance(exception, JobRevoked):
            st.will_retry = False
            return  # acked, not dead-lettered: the operator asked for it to stop
        throws = self._option(message, actor, "throws", None)
        retries = int(message.options.get("retries", 0))
        max_retries = self._option(message, actor, "max_retries", self.max_retries)
        retry_when = self._option(message, actor, "retry_when", None)

        final = False
        if throws and isinstance(exception, throws):
            final = True
        elif isinstance(exception, TimeLimitExceeded) and not self._option(
                message, actor, "retry_on_timeout", True):
            st.outcome_unknown = True
            final = True
        elif retry_when is not None:
            final = not retry_when(retries, exception)
        elif max_retries is not None and retries >= max_retries:
            final = True

        if final:
            st.will_retry = False
            message.fail()
            return

        if isinstance(exception, Retry) and exception.delay is not None:
            delay = int(exception.delay)
        else:
            delay = backoff_ms(retries,
                               int(self._option(message, actor, "min_backoff", self.min_backoff)),
                               int(self._option(message, actor, "max_backoff", self.max_backoff)))
        st.will_retry, st.retry_delay_ms = True, delay
        message.options["retries"] = retries + 1
        log.info("Retrying %s (%s) in %d ms (retry %d of %s)", message.message_id, message.actor_name,
                 delay, retries + 1, max_retries)
        broker.enqueue(message, delay=delay)
