"""The platform's Redis broker: dramatiq's RedisBroker, extended so that the ledger's
events travel inside the broker's own operations.

* :meth:`PlatformRedisBroker.enqueue` writes the message and its run's PENDING event in
  one script call; the consumer's ack and nack carry the event that closes the delivery
  (:mod:`jobcore.consumer`). What the events mean is the ledger's business: the broker
  gets them, as bytes, from the ledger strategy it was built with (``ledger``).
* A message larger than ``MAX_MESSAGE_BYTES`` is refused at ``send()``.
* :meth:`heartbeat` and :meth:`sweep` let a worker heartbeat from its own thread (so a
  busy worker is never declared dead) and run the dead-worker maintenance on demand (so
  an orphaned message is redelivered in bounded time instead of by a 1-in-1000 chance).
  Maintenance runs only from :meth:`sweep`, never by chance inside a fetch, and a sweep
  is skipped until this process has reached Redis for a whole heartbeat timeout: after
  a Redis outage or a failover every worker missed its heartbeats alike, and the first
  one back must not take the others for dead.
* The broker id names the worker: ``<host>-<pid>-<random>`` (``WORKER_HOSTNAME``), so
  ``job_runs.worker_id`` and the worker registry tell hosts apart.
* :meth:`enqueue` either succeeds or raises :class:`ServiceUnavailable`; sending the
  same message again after an error never enqueues it twice (its id is known).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol
from uuid import uuid4

import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError

from jobcore.broker_scripts import PLATFORM_LUA
from jobcore.consumer import PlatformConsumer
from jobcore.errors import ConfigurationError, MessageTooLarge, ServiceUnavailable, UnserializableArguments
from jobcore.fastscript import FastScript, Replication
from jobcore.keys import Keys

#: Wake-up tokens kept per queue at most (enough to wake every consumer of a busy queue).
WAKE_TOKENS_MAX = 64
#: Messages per script call of a bulk enqueue.
BULK_CHUNK = 500


class Carried(Protocol):
    """What the ledger hands the broker to carry with an ack or a nack."""

    @property
    def raw(self) -> bytes: ...

    @property
    def final(self) -> bool: ...

    @property
    def started_entry(self) -> bytes | None: ...


class LedgerCarrier(Protocol):
    """The part of the ledger strategy the broker calls (see :mod:`ledger.strategy`)."""

    def pending_event(self, fn: Any, message: Any) -> bytes: ...

    def closing(self, message: Any) -> Carried | None: ...

    def accepting(self) -> bool: ...


class PlatformRedisBroker(RedisBroker):
    """RedisBroker whose operations carry ledger events (see module docstring)."""

    def __init__(self, *, url: str, ledger: LedgerCarrier, namespace: str = "dramatiq",
                 heartbeat_timeout: int = 30_000, max_message_bytes: int = 256 * 1024,
                 replication: Replication | None = None, hostname: str = "", **kwargs: Any) -> None:
        # With an explicit client, don't let dramatiq build a second (unused) pool from the URL.
        super().__init__(url=None if kwargs.get("client") else url, namespace=namespace,
                         heartbeat_timeout=heartbeat_timeout, **kwargs)
        #: Where Redis is, for messages (password masked: see jobcore.redis_client.redis_target).
        self.url = url
        self.ledger = ledger
        self.keys = Keys(namespace)
        self.max_message_bytes = max_message_bytes
        self.replication = replication or Replication()
        self.broker_id = worker_identity(hostname)
        # Since when this process has reached Redis without a gap (None: not yet / lost it).
        self._connected_since: float | None = None
        self._held: dict[str, set[str]] = {}
        self._force_maintenance = threading.local()
        self._platform_script: FastScript | None = None
        self._dispatch_fast: FastScript | None = None
        self._hook_cache: dict[tuple[str, bool, int], list[tuple[Any, Any]]] = {}

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
        # "before" hook (e.g. SkipMessage, an EnqueueError) propagates; any other failure
        # is logged (the ledger never depends on a hook that may be swallowed here).
        for middleware, hook in self._hooks(name, after):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                if not after:
                    raise
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

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
    def _prepare(self, message: Message[Any], delay: int | None) -> tuple[Message[Any], bytes, bytes | None]:
        """Stamp a Redis id (and the delay), run the ``before_enqueue`` hooks, take the
        run's PENDING event from the ledger and encode: nothing is written yet."""
        options: dict[str, Any] = {"redis_message_id": str(uuid4())}
        if delay is not None:
            due = current_millis() + delay
            # due_at_ms survives the delay-queue hop, so age limits count from this moment.
            options.update(eta=due, due_at_ms=due)
            message = message.copy(queue_name=dq_name(message.queue_name), options=options)
        else:
            message = message.copy(options=options)
        self.emit_before("enqueue", message, delay)
        # A retry or a delay-queue hop carries ``ledger_tracked``: its run has a row already.
        new_run = not message.options.get("ledger_tracked")
        if new_run:
            message.options["ledger_tracked"] = 1
        try:
            data = message.encode()
        except (TypeError, ValueError) as exc:
            raise UnserializableArguments(
                f"arguments of {message.actor_name} cannot be serialised to JSON: {exc}") from None
        if len(data) > self.max_message_bytes:
            raise MessageTooLarge(f"message for {message.actor_name} is {len(data):,} bytes encoded; the limit is "
                                  f"{self.max_message_bytes:,} (MAX_MESSAGE_BYTES): pass a reference to the data "
                                  "(a row id, an object key) instead of the data itself")
        event = None
        if new_run:
            actor = self.actors.get(message.actor_name)
            event = self.ledger.pending_event(actor.fn if actor is not None else None, message)
        return message, data, event

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Enqueue ``message`` with its run's PENDING event, atomically. A message whose id
        the ledger already knows (an open run, or one finished within the dedupe window)
        is not enqueued twice."""
        message, data, event = self._prepare(message, delay)
        self._call("enqueue", message.queue_name, message.options["redis_message_id"], data, WAKE_TOKENS_MAX,
                   event or "", message.message_id, require_replicas=True)
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_many(self, messages: Sequence[Message[Any]]) -> list[Message[Any]]:
        """Enqueue many messages (no delay): every ``before_enqueue`` hook and check runs
        for each message before anything is written; then each chunk of
        :data:`BULK_CHUNK` messages and their PENDING events is one atomic script call."""
        prepared = [self._prepare(m, None) for m in messages]
        by_queue: dict[str, list[tuple[Message[Any], bytes, bytes | None]]] = {}
        for item in prepared:
            by_queue.setdefault(item[0].queue_name, []).append(item)
        for queue_name, items in by_queue.items():
            for start in range(0, len(items), BULK_CHUNK):
                args: list[Any] = [WAKE_TOKENS_MAX, 0]
                for message, data, event in items[start:start + BULK_CHUNK]:
                    args += [message.options["redis_message_id"], data, event or "", message.message_id]
                self._call("enqueue_many", queue_name, *args, require_replicas=True)
        out = [m for m, _, _ in prepared]
        for message in out:
            self.emit_after("enqueue", message, None)
        return out

    def requeue_dead(self, queue_name: str, dead_redis_id: str, message: Message[Any]) -> Message[Any] | None:
        """Replace a dead letter with ``message`` (a new run) in one step; None if the dead
        letter was already gone (requeued or discarded by someone else)."""
        message, data, event = self._prepare(message, None)
        done = self._call("requeue_dead", queue_name, dead_redis_id, message.options["redis_message_id"], data,
                          event or "", message.message_id, require_replicas=True)
        if not done:
            return None
        self.emit_after("enqueue", message, None)
        return message

    def discard_dead(self, queue_name: str, dead_redis_id: str) -> bool:
        """Delete a dead letter; False if it was already gone."""
        return bool(self._call("discard_dead", queue_name, dead_redis_id))

    def _call(self, command: str, queue_name: str, *args: Any, require_replicas: bool = False) -> Any:
        try:
            return self.platform_script(keys=self.platform_keys, require_replicas=require_replicas,
                                        args=[command, current_millis(), queue_name, self.broker_id, *args])
        except redis.RedisError as exc:
            # Raised, never dropped: the caller may send the same message again (a message
            # whose first attempt did reach Redis is then not enqueued twice).
            raise ServiceUnavailable(f"cannot {command.replace('_', ' ')} on Redis at {self.url}: "
                                     f"{type(exc).__name__}: {exc}") from exc

    @property
    def platform_keys(self) -> list[str]:
        """The KEYS of :data:`jobcore.broker_scripts.PLATFORM_LUA`."""
        k = self.keys
        return [self.namespace, k.ledger_stream, k.ledger_runs, k.ledger_finished]

    @property
    def platform_script(self) -> FastScript:
        """The platform's Redis script, registered on first use."""
        script = self._platform_script
        if script is None:
            script = self._platform_script = FastScript(self.client, PLATFORM_LUA, self.replication)
        return script

    def fetch(self, queue_name: str, count: int) -> list[bytes | None]:
        """dramatiq's fetch (move up to ``count`` ids to this worker's ack set, return
        their payloads), through :class:`FastScript`: a busy consumer fetches often, and
        redis-py's generic script path made it the biggest user of the worker's GIL."""
        script = self._dispatch_fast
        if script is None:
            source: Any = self.scripts["dispatch"].script  # dramatiq's dispatch.lua, as registered
            # No WAIT here: a fetch lost in a failover leaves the message queued on the new
            # primary, and START refuses the copy this worker holds (not in its ack set).
            script = self._dispatch_fast = FastScript(self.client, source)
        return list(script(keys=[self.namespace], args=[
            "fetch", current_millis(), queue_name, self.broker_id, self.heartbeat_timeout, self.dead_message_ttl,
            self._should_do_maintenance("fetch"), self._max_unpack_size(), count]))

    def held_ids(self, queue_name: str) -> set[str]:
        """Redis ids of ``queue_name`` this process has fetched and not acked yet (shared by
        the queue's consumers: see :class:`jobcore.consumer.PlatformConsumer`)."""
        return self._held.setdefault(queue_name, set())

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> _RedisConsumer:
        return PlatformConsumer(self, queue_name, prefetch, timeout)

    # -- liveness and maintenance -------------------------------------------------------
    def heartbeat(self) -> None:
        """Mark this broker (worker process) alive now, for dramatiq's maintenance and for
        the worker registry; registry entries silent for a day are dropped."""
        now = current_millis()
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.zadd(self.keys.heartbeats, {self.broker_id: now})
                pipe.zadd(self.keys.workers, {self.broker_id: now})
                pipe.zremrangebyscore(self.keys.workers, 0, now - 86_400_000)
                pipe.execute()
        except redis.RedisError:
            self._connected_since = None
            raise
        if self._connected_since is None:
            self._connected_since = time.monotonic()

    def _should_do_maintenance(self, command: str) -> int:
        # Only the sweeper runs maintenance (see the module docstring).
        return 1 if getattr(self._force_maintenance, "on", False) else 0

    def may_sweep(self) -> bool:
        """True once this process has heartbeated without a gap for a whole heartbeat
        timeout: only then is another worker's silence its own, not a shared outage."""
        since = self._connected_since
        return since is not None and time.monotonic() - since >= self.heartbeat_timeout / 1000

    def sweep(self, queue_names: list[str] | None = None, *, force: bool = False) -> None:
        """Run dramatiq's maintenance now on every queue (and delay queue): messages held
        by workers whose heartbeat is older than ``heartbeat_timeout`` go back to their
        queue. Messages of live workers are never touched. Skipped (unless ``force``)
        until :meth:`may_sweep`."""
        if not force and not self.may_sweep():
            return
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
            raise ServiceUnavailable(f"cannot reach Redis at {self.url}: {type(exc).__name__}: {exc}") from None


def platform_broker(broker: Any) -> PlatformRedisBroker:
    """``broker`` as the platform broker (bulk enqueue and the ledger need it)."""
    if not isinstance(broker, PlatformRedisBroker):
        raise ConfigurationError(f"expected the platform broker (jobplatform), got {type(broker).__name__}")
    return broker


def worker_identity(hostname: str = "") -> str:
    """``<host>-<pid>-<random>``: unique per process, readable per host. Dots and colons
    are replaced (the id is part of Redis key names such as ``__acks__.<id>.<queue>``)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", hostname or socket.gethostname() or "host")[:63]
    return f"{host}-{os.getpid()}-{uuid4().hex[:8]}"


def wait_for_redis(client: redis.Redis, target: str, timeout: float) -> None:
    """Wait until Redis answers (start-up ordering in compose); raise if it never does.
    A refused password is a configuration error: raised at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError as exc:
            raise ServiceUnavailable(f"cannot reach Redis at {target}: {type(exc).__name__}: {exc}") from None
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"cannot reach Redis at {target}: {type(exc).__name__}: {exc}") from None
            time.sleep(0.5)
