"""Stops revoked running jobs (see :mod:`ledger.revocation` for the semantics).

A watcher thread per worker process checks, every ``REVOKE_POLL_MS``, which of the
messages running in this process were revoked (one ``ZMSCORE`` round trip), flags their
delivery for :func:`~ledger.revocation.checkpoint`, and interrupts the job thread of
``interruptible`` actors. Revocation of queued runs needs no worker involvement: the
ledger's START refuses a revoked run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq.middleware.threading import raise_thread_exception

from jobcore.errors import JobRevoked
from jobcore.message_state import state
from middleware.background import BackgroundLoops

log = logging.getLogger(__name__)

# Revocations older than this are pruned from the Redis set; a job revoked that long
# ago has either stopped or finished.
RETENTION_S = 24 * 3600


class Revocation(BackgroundLoops):
    """Tracks running messages and interrupts the revoked ones."""

    def __init__(self, *, poll_ms: int = 500) -> None:
        super().__init__()
        self.poll_s = poll_ms / 1000
        # message_id -> (thread id, interruptible, message proxy)
        self._running: dict[str, tuple[int, bool, Any]] = {}
        self._lock = threading.Lock()
        self._last_prune = 0.0

    @property
    def actor_options(self) -> set[str]:
        return {"interruptible"}

    def before_process_message(self, broker: Any, message: Any) -> None:
        actor = broker.actors.get(message.actor_name)
        interruptible = bool(actor.options.get("interruptible", True)) if actor else True
        with self._lock:
            self._running[message.message_id] = (threading.get_ident(), interruptible, message)

    def _done(self, message: Any) -> None:
        with self._lock:
            self._running.pop(message.message_id, None)

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        self._done(message)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self._done(message)

    def loops(self, broker: Any, worker: Any) -> list[tuple[str, float, Callable[[], object]]]:
        return [("revocation-watcher", self.poll_s, lambda: self.check(broker))]

    def check(self, broker: Any) -> None:
        """Flag (and interrupt) the revoked messages running in this process."""
        key = broker.keys.revoked
        with self._lock:
            running = dict(self._running)
        if running:
            ids = list(running)
            for message_id, score in zip(ids, broker.client.zmscore(key, ids), strict=True):
                if score is not None:
                    self._revoke_running(message_id, *running[message_id])
        if time.time() - self._last_prune > 60:
            broker.client.zremrangebyscore(key, 0, time.time() - RETENTION_S)
            self._last_prune = time.time()

    def _revoke_running(self, message_id: str, thread_id: int, interruptible: bool, message: Any) -> None:
        state(message).revoked = True
        if not interruptible:
            return
        with self._lock:
            still_running = self._running.pop(message_id, None) is not None
        if still_running:
            log.warning("Interrupting revoked job %s", message_id)
            raise_thread_exception(thread_id, JobRevoked)
