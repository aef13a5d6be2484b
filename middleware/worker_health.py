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
(``stuck_fetch_requeued``), so such a message waits at most twice the grace. A stuck id
whose payload names another Redis id (a copy) is dead-lettered with that reason instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from middleware.background import BackgroundLoops

log = logging.getLogger(__name__)


class WorkerHealth(BackgroundLoops):
    """Heartbeat, orphan sweeper and stuck-fetch check of one worker process."""

    def __init__(self, *, heartbeat_interval_ms: int, sweep_interval_ms: int, stuck_fetch_grace_ms: int) -> None:
        super().__init__()
        self.heartbeat_s = heartbeat_interval_ms / 1000
        self.sweep_s = sweep_interval_ms / 1000
        self.stuck_s = stuck_fetch_grace_ms / 1000
        self._suspects: dict[str, set[str]] = {}

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # A clean stop leaves the registry at once (WorkersDown, the console's process
        # list), instead of counting as alive until its heartbeat times out. Its
        # __heartbeats__ entry stays: dramatiq's maintenance must still see it expire.
        try:
            broker.client.zrem(broker.keys.workers, broker.broker_id)
        except Exception as exc:  # Redis gone at shutdown: the heartbeat simply expires
            log.warning("Could not deregister worker %s: %s", broker.broker_id, exc)

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        broker.heartbeat()
        super().after_worker_boot(broker, worker)

    def loops(self, broker: Any, worker: Any) -> list[tuple[str, float, Callable[[], object]]]:
        return [
            ("heartbeat", self.heartbeat_s, broker.heartbeat),
            ("orphan-sweeper", self.sweep_s, broker.sweep),
            ("stuck-fetch-check", self.stuck_s, lambda: self.check_stuck_fetch(broker, worker)),
        ]

    def check_stuck_fetch(self, broker: Any, worker: Any) -> None:
        """Requeue ids unheld in this worker's ack sets in two consecutive checks."""
        for queue_name, thread in list(getattr(worker, "consumers", {}).items()):
            consumer = getattr(thread, "consumer", None)
            if consumer is None or not hasattr(consumer, "unheld_ack_ids"):
                continue
            unheld = consumer.unheld_ack_ids()
            stuck = unheld & self._suspects.get(queue_name, set())
            self._suspects[queue_name] = unheld - stuck
            stuck -= self._quarantine_copies(broker, queue_name, stuck)
            if stuck:
                broker.do_requeue(queue_name, *sorted(stuck))
                broker.client.hincrby(broker.keys.stats, "stuck_fetch_requeued", len(stuck))
                log.error("Requeued %d message(s) stuck in this worker's ack set for %s "
                          "(fetched in Redis, never received): %s", len(stuck), queue_name, sorted(stuck))

    def _quarantine_copies(self, broker: Any, queue_name: str, stuck: set[str]) -> set[str]:
        """Dead-letter the stuck ids whose payload names another Redis id (a payload copied
        under a second id by a foreign producer or a hand-made requeue): the worker acks a
        message by the id its payload names, so such a one is never acked and, requeued,
        would come back forever. Returns the ids dead-lettered."""
        if not stuck:
            return set()
        ids = sorted(stuck)
        payloads = broker.client.hmget(broker.keys.messages(queue_name), ids)
        copies = set()
        for rid, payload in zip(ids, payloads, strict=True):
            try:
                named = json.loads(payload)["options"]["redis_message_id"] if payload is not None else rid
            except Exception:
                continue  # undecodable: requeued, the consumer dead-letters it with its reason
            if named == rid:
                continue
            reason = "options.redis_message_id names another Redis id (a copied payload): it can never be acked"
            log.error("Dead-lettering %s on queue %s: %s", rid, queue_name, reason)
            broker.do_nack(queue_name, rid)
            broker.notify("after_message_rejected", queue_name, rid, payload, reason)
            copies.add(rid)
        return copies
