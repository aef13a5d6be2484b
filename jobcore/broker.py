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
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis, dq_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError

from jobcore.errors import ServiceUnavailable
from jobcore.fastscript import FastScript
from jobcore.ledger import attempts_key, spool_key, take_enqueue_event
from jobcore.message_state import state
from jobcore.settings import Settings, get_settings, mask_url

log = logging.getLogger(__name__)

#: Wake-up tokens kept per queue at most (enough to wake every consumer of a busy queue).
WAKE_TOKENS_MAX = 64

# The platform's broker operations, each one atomic script call (one round trip, one
# reply; a MULTI pipeline costs several replies and redis-py work per command).
# KEYS: namespace, ledger buffer (jobcore.ledger.spool_key), attempts hash (attempts_key).
#   enqueue    ARGV 5..8: redis id, payload, wake tokens max, ledger event or "" (empty).
#              dramatiq's enqueue (payload hash + queue list) plus a wake-up token and,
#              in redis ledger mode, the run's PENDING event: both or neither.
#   ack_finish ARGV 5..7: redis id, message id, FINISHED event.
#              dramatiq's ack plus the run's FINISHED event. The payload is deleted even
#              if maintenance took the id back meanwhile (this worker was presumed dead):
#              the run is finished, so a second delivery of it finds no payload and is
#              skipped instead of running again.
PLATFORM_LUA = """
local ns = KEYS[1]
local spool = KEYS[2]
local command = ARGV[1]
local worker_id = ARGV[4]
redis.call("zadd", ns .. ":__heartbeats__", ARGV[2], worker_id)
local queue = ns .. ":" .. ARGV[3]
local messages = queue .. ".msgs"
if command == "enqueue" then
  redis.call("hset", messages, ARGV[5], ARGV[6])
  redis.call("rpush", queue, ARGV[5])
  redis.call("lpush", queue .. ".wake", 1)
  redis.call("ltrim", queue .. ".wake", 0, tonumber(ARGV[7]) - 1)
  if ARGV[8] ~= "" then
    redis.call("rpush", spool, ARGV[8])
  end
  return 1
elseif command == "ack_finish" then
  redis.call("srem", ns .. ":__acks__." .. worker_id .. "." .. ARGV[3], ARGV[5])
  redis.call("hdel", messages, ARGV[5])
  redis.call("rpush", spool, ARGV[7])
  redis.call("hdel", KEYS[3], ARGV[6])
  return 1
end
return redis.error_reply("unknown platform command " .. command)
"""


class PlatformRedisBroker(RedisBroker):
    """RedisBroker with failure hooks, message quarantine, explicit heartbeat and sweep."""

    def __init__(self, *, url: str, namespace: str = "dramatiq", heartbeat_timeout: int = 30_000,
                 **kwargs: Any) -> None:
        # With an explicit client, don't let dramatiq build a second (unused) pool from the URL.
        super().__init__(url=None if kwargs.get("client") else url, namespace=namespace,
                         heartbeat_timeout=heartbeat_timeout, **kwargs)
        self.url = url
        self._force_maintenance = threading.local()
        self._platform_script: Any = None
        self._hook_cache: dict[tuple[str, bool, int], list[tuple[Any, Any]]] = {}
        self._dispatch_fast: Any = None

    # -- middleware dispatch ----------------------------------------------------------------
    def _hooks(self, name: str, reverse: bool) -> list[tuple[Any, Any]]:
        """The middleware that implement hook ``name`` (in call order), with their bound
        hooks. dramatiq calls every middleware's hook, no-ops included: with the platform's
        ~16 middleware that is ~200 calls per message, a measurable share of a job's cost.
        Cached per middleware list length (middleware are only ever added)."""
        key = (name, reverse, len(self.middleware))
        hooks = self._hook_cache.get(key)
        if hooks is None:
            base = getattr(Middleware, name, None)
            ordered = list(reversed(self.middleware)) if reverse else list(self.middleware)
            hooks = []
            for middleware in ordered:
                hook = getattr(middleware, name, None)
                if hook is None or (base is not None and getattr(hook, "__func__", None) is base):
                    continue
                hooks.append((middleware, hook))
            self._hook_cache[key] = hooks
        return hooks

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """As dramatiq's, calling only the middleware that implement the hook."""
        self._emit("before_" + signal, False, args, kwargs)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """As dramatiq's, calling only the middleware that implement the hook."""
        self._emit("after_" + signal, True, args, kwargs)

    def _emit(self, name: str, after: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # dramatiq's semantics: "after" hooks run in reverse order; a MiddlewareError in a
        # "before" hook (e.g. SkipMessage) propagates; any other failure is logged.
        for middleware, hook in self._hooks(name, after):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                if not after:
                    raise
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

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

    def wake_key(self, queue_name: str) -> str:
        """List that idle consumers of ``queue_name`` block on (see :meth:`do_enqueue`)."""
        return f"{self.namespace}:{queue_name}.wake"

    def do_enqueue(self, queue_name: str, redis_id: str, data: bytes) -> None:
        """dramatiq's enqueue plus a wake-up token (and, in redis ledger mode, the run's
        PENDING event), atomically in one script call.

        dramatiq's consumers poll with exponential back-off (up to the worker timeout), so
        a job sent to an idle worker waits ~10 ms at p50 and up to a second. Our consumers
        block on the queue's wake list instead and fetch as soon as a token arrives.
        The list is trimmed, so tokens nobody waits for cannot pile up.
        """
        event = self.take_ledger_event(redis_id) or ""
        self.platform_script(keys=self.platform_keys, args=[
            "enqueue", current_millis(), queue_name, self.broker_id, redis_id, data, WAKE_TOKENS_MAX, event])

    @property
    def platform_keys(self) -> list[str]:
        """The KEYS of :data:`PLATFORM_LUA`."""
        return [self.namespace, spool_key(self.namespace), attempts_key(self.namespace)]

    @property
    def platform_script(self) -> Any:
        """The platform's Redis script (:data:`PLATFORM_LUA`), registered on first use."""
        script = self._platform_script
        if script is None:
            script = self._platform_script = FastScript(self.client, PLATFORM_LUA)
        return script

    def fetch(self, queue_name: str, count: int) -> list[bytes | None]:
        """dramatiq's fetch (move up to ``count`` ids to this worker's ack set, return
        their payloads), through :class:`FastScript`: a busy consumer fetches often, and
        redis-py's generic script path made it the biggest user of the worker's GIL."""
        script = self._dispatch_fast
        if script is None:
            source: Any = self.scripts["dispatch"].script  # dramatiq's dispatch.lua, as registered
            script = self._dispatch_fast = FastScript(self.client, source)
        return list(script(keys=[self.namespace], args=[
            "fetch", current_millis(), queue_name, self.broker_id, self.heartbeat_timeout, self.dead_message_ttl,
            self._should_do_maintenance("fetch"), self._max_unpack_size(), count]))

    def take_ledger_event(self, redis_id: str) -> str | None:
        """The PENDING event the ledger middleware stashed for this message (redis mode)."""
        return take_enqueue_event(redis_id)

    def enqueue_encoded_many(self, items: list[tuple[str, str, bytes]], chunk: int = 1000) -> None:
        """Enqueue pre-encoded messages ``(queue_name, redis_message_id, data)``.

        Per queue and chunk: one HSET of every payload and one RPUSH of every id (what
        dramatiq's enqueue script does per message) plus the wake-up tokens, in one
        MULTI/EXEC round trip, so consumers never see an id without its payload."""
        by_queue: dict[str, list[tuple[str, bytes]]] = {}
        for queue_name, redis_id, data in items:
            by_queue.setdefault(queue_name, []).append((redis_id, data))
        for queue_name, entries in by_queue.items():
            base = f"{self.namespace}:{queue_name}"
            wake = self.wake_key(queue_name)
            for start in range(0, len(entries), chunk):
                part = entries[start:start + chunk]
                with self.client.pipeline(transaction=True) as pipe:
                    pipe.hset(f"{base}.msgs", mapping=dict(part))
                    pipe.rpush(base, *[rid for rid, _ in part])
                    pipe.lpush(wake, *([1] * min(len(part), WAKE_TOKENS_MAX)))
                    pipe.ltrim(wake, 0, WAKE_TOKENS_MAX - 1)
                    pipe.execute()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> _RedisConsumer:
        return _QuarantiningConsumer(self, queue_name, prefetch, timeout)

    # -- liveness and maintenance -------------------------------------------------------
    @property
    def heartbeats_key(self) -> str:
        return f"{self.namespace}:__heartbeats__"

    @property
    def workers_key(self) -> str:
        """Registry of worker processes only (``__heartbeats__`` also holds producers,
        which heartbeat whenever they enqueue); the exporter counts live workers here."""
        return f"{self.namespace}:platform:workers"

    def heartbeat(self) -> None:
        """Mark this broker (worker process) alive now, for dramatiq's maintenance and for
        the worker registry; registry entries silent for a day are dropped."""
        now = current_millis()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self.heartbeats_key, {self.broker_id: now})
            pipe.zadd(self.workers_key, {self.broker_id: now})
            pipe.zremrangebyscore(self.workers_key, 0, now - 86_400_000)
            pipe.execute()

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
    """A consumer that blocks on the queue's wake-up list when idle and moves
    undecodable messages to the dead-letter queue."""

    broker: PlatformRedisBroker

    def __init__(self, broker: PlatformRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        # Redis ids of the messages this consumer has handed to the worker and not yet
        # acked: what the stuck-fetch check compares the Redis ack set against.
        self.held: set[str] = set()
        # Set when acks have freed a quarter of the prefetch: a busy consumer waits on it,
        # then fetches those slots in one round trip (a fetch per freed slot costs a round
        # trip per job; dramatiq's back-off sleep here instead leaves threads idle).
        self._capacity = threading.Event()
        self._refill_below = prefetch - max(1, prefetch // 4)

    def ack(self, message: Any) -> None:
        event = state(message).finish_event
        try:
            if event is None:
                super().ack(message)
            else:
                self._ack_with_event(message, event)
        finally:
            self.held.discard(message.options.get("redis_message_id"))
            if self.outstanding_message_count <= self._refill_below:
                self._capacity.set()

    def _ack_with_event(self, message: Any, event: str) -> None:
        """The ack and the run's FINISHED event in one script call (redis-mode ledger): a
        crash leaves either both (the run is finished) or neither (it is redelivered)."""
        broker = self.broker
        try:
            broker.platform_script(keys=broker.platform_keys, args=[
                "ack_finish", current_millis(), self.queue_name, broker.broker_id,
                message.options["redis_message_id"], message.message_id, event])
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None
        finally:
            self.queued_message_ids.discard(message.message_id)

    def nack(self, message: Any) -> None:
        try:
            super().nack(message)
        finally:
            self.held.discard(message.options.get("redis_message_id"))
            if self.outstanding_message_count <= self._refill_below:
                self._capacity.set()

    def unheld_ack_ids(self) -> set[str]:
        """Ids in this worker's Redis ack set for the queue that this consumer neither
        holds nor has in its fetch cache: fetched in Redis, never received (a lost reply).
        A fetch in flight also shows up here, so callers confirm over two checks."""
        acks = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
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
            except redis.ConnectionError as exc:
                raise ConnectionClosed(exc) from None

    def _next(self) -> Any:
        while True:
            if self.message_cache:
                data = self.message_cache.pop(0)
                if data is None:  # an id whose payload is gone (acked meanwhile)
                    continue
                self.misses = 0
                message = Message.decode(data)
                self.queued_message_ids.add(message.message_id)
                self.held.add(str(message.options.get("redis_message_id")))
                return MessageProxy(message)
            if self.outstanding_message_count > self._refill_below:
                # Busy: (nearly) every prefetched message is still being processed. Don't
                # take a wake-up token meant for an idle consumer; wait until the worker
                # threads have freed enough slots (see ``_refill_below``). At most 5 ms, so
                # delayed messages are still released on time.
                self._capacity.clear()
                if self.outstanding_message_count > self._refill_below:
                    self._capacity.wait(0.005)
                return None
            self.message_cache = self.broker.fetch(self.queue_name, self.prefetch - self.outstanding_message_count)
            if self.message_cache:
                continue
            # Idle: wait for a wake-up token, at most as long as dramatiq's back-off would.
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            self.broker.client.blpop([self.broker.wake_key(self.queue_name)], timeout=max(backoff_ms, 10) / 1000)
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
    # dramatiq ignores socket options when given a URL, so build the client here:
    # bounded connect/read timeouts turn a hung Redis into errors instead of stuck threads.
    client = redis.Redis.from_url(s.redis_url, socket_timeout=30, socket_connect_timeout=5,
                                  health_check_interval=30)
    broker = PlatformRedisBroker(
        url=s.redis_url,
        client=client,
        namespace=s.redis_namespace,
        heartbeat_timeout=s.heartbeat_timeout_ms,
        middleware=middleware,
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
