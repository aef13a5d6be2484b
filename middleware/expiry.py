"""EXPIRED: a message that waited in the queue longer than its max age never starts.

Like dramatiq's AgeLimit, but the age is measured from when the message became due
(its send time, or the end of its retry back-off / delay), so a retried message is not
expired for the time it spent deliberately waiting. The run is recorded EXPIRED by the
ledger, never STARTED; the message goes to the dead-letter queue for inspection.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Middleware
from dramatiq.common import current_millis

from jobcore.errors import Expired
from jobcore.message_state import state

log = logging.getLogger(__name__)


class Expiry(Middleware):
    """Fails messages older than ``max_age`` ms (actor option or message option)."""

    def __init__(self, *, max_age: int | None = None) -> None:
        self.max_age = max_age

    @property
    def actor_options(self) -> set[str]:
        return {"max_age"}

    def before_process_message(self, broker: Any, message: Any) -> None:
        actor = broker.actors.get(message.actor_name)
        max_age = message.options.get("max_age")
        if max_age is None and actor is not None:
            max_age = actor.options.get("max_age", self.max_age)
        if not max_age:
            return
        due = message.options.get("due_at_ms") or message.message_timestamp
        waited = current_millis() - int(due)
        if waited >= max_age:
            st = state(message)
            st.skip_reason = "EXPIRED"
            st.skip_detail = f"waited {waited} ms in the queue; max age is {max_age} ms"
            log.warning("Message %s expired: %s", message.message_id, st.skip_detail)
            message.fail()
            raise Expired(st.skip_detail)
