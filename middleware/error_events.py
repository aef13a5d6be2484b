"""PostHog ``$exception`` events for every failed attempt, via the official client.

The client queues events and sends them from its own thread, with a short HTTP timeout
and a bounded queue, so a PostHog that is down or slow never blocks or crashes a worker
(events beyond the queue are dropped and logged by the client). Every string in the
event passes through the redactor (``before_send``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from dramatiq import Middleware
from dramatiq.common import q_name

from jobcore.context import OPTION
from jobcore.errors import JobRevoked
from jobcore.message_state import state
from jobcore.redaction import Redactor, get_redactor
from jobcore.settings import Settings, get_settings

log = logging.getLogger(__name__)


class ErrorEvents(Middleware):
    """Sends one ``$exception`` event per failed attempt (no-op without an API key)."""

    def __init__(self, settings: Settings | None = None, redactor: Redactor | None = None) -> None:
        self._settings = settings
        self._redactor = redactor
        self._client: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return set()

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def client(self) -> Any:
        """This process's PostHog client (its sender thread does not survive a fork)."""
        if not self.settings.posthog_api_key:
            return None
        pid = os.getpid()
        with self._lock:
            if self._client is None or self._pid != pid:
                from posthog import Posthog

                redactor = self._redactor or get_redactor()

                def before_send(event: dict[str, Any]) -> dict[str, Any]:
                    return redactor.value(event)

                self._client = Posthog(
                    self.settings.posthog_api_key,
                    host=self.settings.posthog_host,
                    timeout=self.settings.posthog_timeout,
                    max_retries=2,
                    max_queue_size=10_000,
                    flush_at=50,
                    flush_interval=0.5,
                    before_send=before_send,
                    enable_exception_autocapture=False,
                )
                self._pid = pid
            return self._client

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        if exception is None or isinstance(exception, JobRevoked):
            return
        client = self.client()
        if client is None:
            return
        st = state(message)
        ctx = message.options.get(OPTION) or {}
        tenant_id = ctx.get("tenant_id") if isinstance(ctx, dict) else None
        properties = {
            "actor": message.actor_name,
            "queue": q_name(message.queue_name),
            "message_id": message.message_id,
            "tenant_id": tenant_id,
            "attempt": st.attempt,
            "final": not st.will_retry,
            "will_retry": st.will_retry,
            "outcome_unknown": st.outcome_unknown,
            "$process_person_profile": False,
        }
        try:
            client.capture_exception(exception, distinct_id=f"tenant:{tenant_id}" if tenant_id else "jobs",
                                     properties=properties)
        except Exception:  # the error path must never fail the job bookkeeping
            log.warning("Could not queue error event for %s", message.message_id, exc_info=True)

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        client = self._client
        if client is None:
            return
        # Flush what is queued, but never hold up shutdown for a PostHog that is down.
        t = threading.Thread(target=client.flush, daemon=True)
        t.start()
        t.join(timeout=3)
