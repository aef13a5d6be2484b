"""The platform's Redis broker: dramatiq's RedisBroker with the gaps closed that matter
for "never fail silently".

* ``enqueue`` tells middleware when the Redis write itself failed
  (``after_enqueue_failed``), so a PENDING row written first can be closed.
* The consumer quarantines a message that cannot be decoded: it is moved to the
  dead-letter queue and reported (``after_message_rejected``) instead of crashing the
  consumer thread and sitting un-acked for as long as the worker lives.
* :meth:`heartbeat` and :meth:`sweep` let a worker heartbeat from its own thread (so a
  busy worker is never declared dead) and run the dead-worker maintenance on demand (so
  an orphaned message is redelivered in bounded time instead of by a 1-in-1000 chance).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import DecodeError
from dramatiq.message import Message

from jobcore.errors import ServiceUnavailable
from jobcore.settings import Settings, get_settings, mask_url

log = logging.getLogger(__name__)


class PlatformRedisBroker(RedisBroker):
    """RedisBroker with failure hooks, message quarantine, explicit heartbeat and sweep."""

    def __init__(self, *, url: str, namespace: str = "dramatiq", heartbeat_timeout: int = 30_000,
                 **kwargs: Any) -> None:
        super().__init__(url=url, namespace=namespace, heartbeat_timeout=heartbeat_timeout, **kwargs)
        self.url = url
        self._force_maintenance = threading.local()

    # -- hooks beyond dramatiq's own signals -----------------------------------------------
    def notify(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every middleware that defines it; failures are logged, not raised."""
        for middleware in self.middleware:
            fn = getattr(middleware, hook, None)
            if fn is None:
                continue
            try:
                fn(self, *args)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", hook, middleware, exc_info=True)

    # -- enqueue ------------------------------------------------------------------------
    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Enqueue like RedisBroker, plus: remember when a delayed message becomes due
        (``due_at_ms``, used for age limits) and report a failed Redis write."""
        if delay is not None:
            # Kept through the delay-queue hop, so age limits count from this moment.
            message = message.copy(options={"due_at_ms": current_millis() + delay})
        try:
            return super().enqueue(message, delay=delay)
        except redis.RedisError as exc:
            self.notify("after_enqueue_failed", message, exc)
            raise ServiceUnavailable(f"cannot enqueue to Redis at {mask_url(self.url)}: {exc}") from exc

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> _RedisConsumer:
        return _QuarantiningConsumer(self, queue_name, prefetch, timeout)

    # -- liveness and maintenance -------------------------------------------------------
    @property
    def heartbeats_key(self) -> str:
        return f"{self.namespace}:__heartbeats__"

    def heartbeat(self) -> None:
        """Mark this broker (worker process) alive now."""
        self.client.zadd(self.heartbeats_key, {self.broker_id: current_millis()})

    def _should_do_maintenance(self, command: str) -> int:
        if getattr(self._force_maintenance, "on", False):
            return 1
        return super()._should_do_maintenance(command)

    def sweep(self, queue_names: list[str] | None = None) -> None:
        """Run dramatiq's maintenance now on every queue (and delay queue): messages held
        by workers whose heartbeat is older than ``heartbeat_timeout`` go back to their
        queue. Messages of live workers are never touched."""
        names = queue_names if queue_names is not None else sorted(self.get_declared_queues())
        self._force_maintenance.on = True
        try:
            for name in names:
                self.do_qsize(name)
                self.do_qsize(dq_name(name))
        finally:
            self._force_maintenance.on = False

    def ping(self) -> None:
        """Raise :class:`ServiceUnavailable` (masked URL) if Redis cannot be reached."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ServiceUnavailable(f"cannot reach Redis at {mask_url(self.url)}: {exc}") from None


class _QuarantiningConsumer(_RedisConsumer):
    """A consumer that moves undecodable messages to the dead-letter queue."""

    broker: PlatformRedisBroker

    def __next__(self) -> Any:
        while True:
            try:
                return super().__next__()
            except DecodeError as exc:
                self._quarantine(exc.data, exc)

    def _quarantine(self, data: bytes, exc: DecodeError) -> None:
        redis_id = self._find_redis_id(data)
        reason = f"undecodable message: {exc.__cause__ or exc}"
        log.error("Quarantining %s on queue %s: %s", redis_id or "<unknown id>", self.queue_name, reason)
        if redis_id is not None:
            # nack moves it from this worker's ack set to <queue>.XQ (dead letters).
            self.broker.do_nack(self.queue_name, redis_id)
        self.broker.notify("after_message_rejected", self.queue_name, redis_id, data, reason)

    def _find_redis_id(self, data: bytes) -> str | None:
        try:
            rid = json.loads(data)["options"]["redis_message_id"]
            if isinstance(rid, str):
                return rid
        except Exception:
            pass
        # Not even JSON: find it among the ids this worker holds for this queue.
        acks = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        msgs = f"{self.broker.namespace}:{self.queue_name}.msgs"
        ids = [i.decode() if isinstance(i, bytes) else i for i in self.broker.client.smembers(acks)]
        for rid, payload in zip(ids, self.broker.client.hmget(msgs, ids) if ids else [], strict=False):
            if payload == data:
                return rid
        return None


def build_broker(settings: Settings | None = None, *, middleware: list[Any] | None = None
                 ) -> PlatformRedisBroker:
    """A broker configured from settings. ``middleware`` is the full stack (see
    :func:`middleware.default_stack`); ``None`` keeps dramatiq's defaults."""
    s = settings or get_settings()
    broker = PlatformRedisBroker(
        url=s.redis_url,
        namespace=s.redis_namespace,
        heartbeat_timeout=s.heartbeat_timeout_ms,
        # dead-worker maintenance is driven by the sweeper thread; keep dramatiq's random
        # trigger as a backstop.
        middleware=middleware,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    return broker


def wait_for_redis(url: str, timeout: float) -> None:
    """Wait until Redis answers (start-up ordering in compose); raise if it never does."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    while True:
        try:
            client.ping()
            return
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"cannot reach Redis at {mask_url(url)}: {exc}") from None
            time.sleep(0.5)
