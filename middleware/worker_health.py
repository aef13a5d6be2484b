"""Worker liveness and orphan rescue.

dramatiq's Redis broker only heartbeats when a consumer fetches, so a worker whose
threads are all busy with long jobs can look dead and have its messages redelivered
while it still runs them; and dead-worker maintenance runs on 1 in 1,000 broker calls,
so an orphaned message can wait many minutes (measured: 68 s to over 25 min).
This middleware heartbeats from a dedicated thread every ``HEARTBEAT_INTERVAL_MS`` and
runs the maintenance on every queue every ``SWEEP_INTERVAL_MS``: a message held by a
SIGKILLed worker is back in its queue within ``HEARTBEAT_TIMEOUT_MS + SWEEP_INTERVAL_MS``,
and a live worker is never swept.

It also bounds the "stuck fetch": when the reply to a fetch is lost, Redis has moved the
messages into this worker's ack set but the worker never received them, and since the
worker is alive no maintenance ever returns them (measured: 45 s and counting, nothing
logged). Every ``STUCK_FETCH_GRACE_MS`` each consumer's ack set is compared with what it
holds; ids unheld in two consecutive checks are requeued, logged and counted
(``stuck_fetch_requeued``), so such a message waits at most twice the grace.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq import Middleware

from jobcore.reconcile import stats_key

log = logging.getLogger(__name__)


class WorkerHealth(Middleware):
    """Heartbeat and sweeper threads of one worker process."""

    def __init__(self, *, heartbeat_interval_ms: int, sweep_interval_ms: int, stuck_fetch_grace_ms: int) -> None:
        self.heartbeat_s = heartbeat_interval_ms / 1000
        self.sweep_s = sweep_interval_ms / 1000
        self.stuck_s = stuck_fetch_grace_ms / 1000
        self._stop = threading.Event()

    @property
    def actor_options(self) -> set[str]:
        return set()

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._stop.clear()
        broker.heartbeat()
        for target, name in ((self._heartbeat, "heartbeat"), (self._sweep, "orphan-sweeper")):
            threading.Thread(target=target, args=(broker,), name=name, daemon=True).start()
        threading.Thread(target=self._stuck_fetch, args=(broker, worker), name="stuck-fetch-check",
                         daemon=True).start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()

    def _heartbeat(self, broker: Any) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                broker.heartbeat()
            except Exception as exc:
                log.warning("Heartbeat failed: %s", exc)

    def _sweep(self, broker: Any) -> None:
        while not self._stop.wait(self.sweep_s):
            try:
                broker.sweep()
            except Exception as exc:
                log.warning("Orphan sweep failed: %s", exc)

    def _stuck_fetch(self, broker: Any, worker: Any) -> None:
        suspects: dict[str, set[str]] = {}
        while not self._stop.wait(self.stuck_s):
            for queue_name, thread in list(getattr(worker, "consumers", {}).items()):
                consumer = getattr(thread, "consumer", None)
                if consumer is None or not hasattr(consumer, "unheld_ack_ids"):
                    continue
                try:
                    unheld = consumer.unheld_ack_ids()
                    stuck = unheld & suspects.get(queue_name, set())
                    suspects[queue_name] = unheld - stuck
                    if stuck:
                        broker.do_requeue(queue_name, *sorted(stuck))
                        broker.client.hincrby(stats_key(broker.namespace), "stuck_fetch_requeued", len(stuck))
                        log.error("Requeued %d message(s) stuck in this worker's ack set for %s "
                                  "(fetched in Redis, never received): %s", len(stuck), queue_name, sorted(stuck))
                except Exception as exc:
                    log.warning("Stuck-fetch check of %s failed: %s", queue_name, exc)
