"""The platform broker's consumer.

* ``ack``/``nack`` carry the event that closes the delivery (from the ledger strategy)
  in the same script call: a crash leaves both or neither.
* When idle it blocks on the queue's wake-up list instead of polling with back-off, so a
  job sent to an idle worker starts within a round trip or two.
* A message that cannot be decoded is moved to the dead-letter queue and reported
  (``after_message_rejected``) instead of crashing the consumer thread.
* While the ledger is too far behind (``accepting()`` is False) it fetches nothing.
* Every Redis failure (a failover, a restart, a partition) surfaces as dramatiq's
  ``ConnectionClosed``: the worker restarts the consumer, which reconnects (to the new
  primary, with Sentinel); acks and nacks are retried by dramatiq until they succeed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed, DecodeError

from jobcore.envelope import decode_message
from jobcore.message_state import state

if TYPE_CHECKING:
    from jobcore.broker import PlatformRedisBroker

log = logging.getLogger(__name__)


class PlatformConsumer(_RedisConsumer):
    """Consumer of one queue of a :class:`~jobcore.broker.PlatformRedisBroker`."""

    broker: PlatformRedisBroker

    def __init__(self, broker: PlatformRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        # Redis ids of the messages this worker process has taken from the queue and not
        # yet acked: what the stuck-fetch check compares the Redis ack set against. Shared
        # by every consumer of the queue in the process (the broker keeps it): dramatiq
        # replaces the consumer after a connection error while the messages it handed out
        # are still being processed and acked.
        self.held: set[str] = broker.held_ids(queue_name)
        # Set when acks have freed a quarter of the prefetch: a busy consumer waits on it,
        # then fetches those slots in one round trip (a fetch per freed slot costs a round
        # trip per job; dramatiq's back-off sleep here instead leaves threads idle).
        self._capacity = threading.Event()
        self._refill_below = prefetch - max(1, prefetch // 4)

    def _finish(self, command: str, message: Any) -> None:
        broker = self.broker
        if state(message).skip_reason == "NOT_HELD":
            # Another worker holds this message now (same Redis id): acking would delete
            # its payload. Only forget it here.
            self._forget(message)
            return
        closing = broker.ledger.closing(message)
        try:
            broker.platform_script(keys=broker.platform_keys, args=[
                command, current_millis(), self.queue_name, broker.broker_id, message.options["redis_message_id"],
                message.message_id, closing.raw if closing is not None else "",
                "1" if closing is not None and closing.final else "0",
                (closing.started_entry or "") if closing is not None else ""])
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
            # dramatiq retries post-processing on ConnectionClosed until Redis is back; a
            # repeated call is harmless (the event is idempotent in the ledger). Until then
            # the message stays held: the stuck-fetch check must not hand it to another
            # worker (it would run again).
            raise ConnectionClosed(exc) from None
        except BaseException:
            self._forget(message)
            raise
        self._forget(message)

    def _forget(self, message: Any) -> None:
        self.queued_message_ids.discard(message.message_id)
        self.held.discard(message.options.get("redis_message_id"))
        if self.outstanding_message_count <= self._refill_below:
            self._capacity.set()

    def ack(self, message: Any) -> None:
        self._finish("ack", message)

    def nack(self, message: Any) -> None:
        self._finish("nack", message)

    def unheld_ack_ids(self) -> set[str]:
        """Ids in this worker's Redis ack set for the queue that this consumer neither
        holds nor has in its fetch cache: fetched in Redis, never received (a lost reply).
        A fetch in flight also shows up here, so callers confirm over two checks."""
        acks = self.broker.keys.acks(self.broker.broker_id, self.queue_name)
        in_redis = {i.decode() if isinstance(i, bytes) else i for i in self.broker.client.smembers(acks)}
        if not in_redis:
            return set()
        known = set(self.held)
        for data in list(self.message_cache):
            try:
                known.add(json.loads(data)["options"]["redis_message_id"])
            except Exception:
                continue
        return in_redis - known

    def __next__(self) -> Any:
        while True:
            try:
                return self._next()
            except DecodeError as exc:
                self._quarantine(exc.data, exc)
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
                raise ConnectionClosed(exc) from None

    def requeue(self, messages: Any) -> None:
        """dramatiq's requeue (on consumer restart and shutdown); a Redis failure is a
        ``ConnectionClosed``, which dramatiq expects there, instead of an error that would
        end the consumer thread. Messages not requeued stay in this worker's ack set and
        are requeued by the stuck-fetch check."""
        try:
            super().requeue(messages)
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
            raise ConnectionClosed(exc) from None

    def _next(self) -> Any:
        while True:
            if self.message_cache:
                data = self.message_cache.pop(0)
                if data is None:  # an id whose payload is gone (acked meanwhile)
                    continue
                self.misses = 0
                message = decode_message(data, self.queue_name)
                self.queued_message_ids.add(message.message_id)
                self.held.add(str(message.options.get("redis_message_id")))
                return MessageProxy(message)
            if self.outstanding_message_count > self._refill_below:
                # Busy: (nearly) every prefetched message is still being processed. Don't
                # take a wake-up token meant for an idle consumer; wait until the worker
                # threads have freed enough slots. At most 5 ms, so delayed messages are
                # still released on time.
                self._capacity.clear()
                if self.outstanding_message_count > self._refill_below:
                    self._capacity.wait(0.005)
                return None
            if not self.broker.ledger.accepting():
                time.sleep(0.5)  # backpressure: the ledger buffer is over its limit
                return None
            self.message_cache = self.broker.fetch(self.queue_name, self.prefetch - self.outstanding_message_count)
            if self.message_cache:
                continue
            # Idle: wait for a wake-up token, at most as long as dramatiq's back-off would.
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            self.broker.client.blpop([self.broker.keys.wake(self.queue_name)], timeout=max(backoff_ms, 10) / 1000)
            self.message_cache = self.broker.fetch(self.queue_name, self.prefetch - self.outstanding_message_count)
            if not self.message_cache:
                return None

    def _quarantine(self, data: bytes, exc: DecodeError) -> None:
        redis_id = self._find_redis_id(data)
        reason = f"undecodable message: {exc.__cause__ or exc}"
        log.error("Quarantining %s on queue %s: %s", redis_id or "<unknown id>", self.queue_name, reason)
        if redis_id is not None:
            # nack moves it from this worker's ack set to <queue>.XQ (dead letters).
            self.broker.do_nack(self.queue_name, redis_id)
        self.broker.notify("after_message_rejected", self.queue_name, redis_id, data, reason)

    def _find_redis_id(self, data: bytes) -> str | None:
        keys = self.broker.keys
        acks = keys.acks(self.broker.broker_id, self.queue_name)
        try:
            rid = json.loads(data)["options"]["redis_message_id"]
            # The id the payload claims, if this worker holds it with this payload (a copied
            # payload claims its original's id: nacking that one would strand this one).
            if isinstance(rid, str) and self.broker.client.sismember(acks, rid) and \
                    self.broker.client.hget(keys.messages(self.queue_name), rid) == data:
                return rid
        except Exception:
            pass
        # Not JSON, or not its own id: find it among the ids this worker holds for this queue.
        ids = [i.decode() if isinstance(i, bytes) else i for i in self.broker.client.smembers(acks)]
        payloads = self.broker.client.hmget(keys.messages(self.queue_name), ids) if ids else []
        for rid, payload in zip(ids, payloads, strict=False):
            if payload == data:
                return rid
        return None
