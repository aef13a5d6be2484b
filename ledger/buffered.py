"""The platform's ledger strategy: every transition is written to Redis atomically with
the broker operation it belongs to, and drained to PostgreSQL in batches.

* PENDING rides in the broker's enqueue script: the message and its row's event are
  stored together or not at all.
* STARTED is appended by :data:`ledger.stream.START_LUA`, which first refuses a delivery
  of a revoked or finished run (a redelivered copy never runs a second time).
* The closing event (COMPLETED, a failed attempt, ERROR, EXPIRED, REVOKED) rides in the
  broker's ack/nack script: a crash leaves either both (the run is finished) or neither
  (the message is redelivered).

What this costs and guarantees is in ``docs/ledger.md``: the ledger trails the buffer by
about ``LEDGER_FLUSH_MS``; losing Redis's data (no persistence) loses the runs whose
events were not drained yet, together with their messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from dramatiq.middleware import MiddlewareError
from sqlalchemy import Engine

from jobcore.errors import LedgerError
from jobcore.keys import Keys
from jobcore.message_state import state
from ledger import queries
from ledger.drainer import Drainer, Lease
from ledger.events import Event, Finished, Rejected, Started, encode
from ledger.recorder import Recorder
from ledger.store import PgStore
from ledger.strategy import Closing, StartVerdict, closing_event
from ledger.stream import EventStream

log = logging.getLogger(__name__)

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)


class LedgerUnavailable(LedgerError, MiddlewareError):
    """A delivery could not be checked and marked STARTED because Redis stayed
    unreachable; the job is not run (a MiddlewareError, so dramatiq does not ignore it)."""


class RedisStreamLedger:
    """Redis-buffered ledger strategy (see the module docstring)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, dsn: str, control: Callable[[], Engine], recorder: Recorder,
                 flush_ms: int = 50, chunk: int = 2000, lease_ms: int = 5000, backpressure_events: int = 1_000_000,
                 dedupe_window_s: float = 900.0, statement_timeout_ms: int = 30_000, pg_options: bool = True,
                 start_wait_s: float = 60.0) -> None:
        self.client = client
        self.keys = keys
        self.recorder = recorder
        self.control = control
        self.stream = EventStream(client, keys)
        self.start_wait_s = start_wait_s
        self.flush_s = flush_ms / 1000
        self.lease_ms = lease_ms
        self.backpressure_events = backpressure_events
        self._store_args: dict[str, Any] = {"statement_timeout_ms": statement_timeout_ms, "pg_options": pg_options}
        self._dsn = dsn
        self._dedupe_window_s = dedupe_window_s
        self._chunk = chunk
        # On-demand syncs (revoke, reconcile, CLI) and the background loop each have a
        # drainer with its own connection, so neither waits on the other's lock.
        self.drainer = self._drainer()
        self._background: Drainer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease: Lease | None = None
        self._backlog = 0

    def _drainer(self) -> Drainer:
        store = PgStore(self._dsn, self.keys.namespace, **self._store_args)
        return Drainer(self.stream, store, chunk=self._chunk, dedupe_window_s=self._dedupe_window_s)

    # -- carried by the broker ----------------------------------------------------------
    def pending_event(self, fn: Any, message: Any) -> bytes:
        return encode(self.recorder.pending(fn, message))

    def closing(self, message: Any) -> Closing | None:
        event = closing_event(message)
        if event is None:
            return None
        final = isinstance(event, (Finished, Rejected))
        return Closing(encode(event), final, state(message).started_entry if final else None)

    # -- written by the middleware -------------------------------------------------------
    def start(self, message: Any, worker_id: str) -> StartVerdict:
        event = Started(self.recorder.run_ref(message), time.time(), worker_id)
        raw = encode(event)
        floor = int(message.options.get("retries", 0)) + 1
        redis_id = message.options.get("redis_message_id")
        held = (worker_id, message.queue_name, str(redis_id)) if redis_id else None
        n, entry = self._start(message.message_id, raw, floor, register=False, held=held)
        if n == -4:
            return StartVerdict(False, reason="NOT_HELD")
        if n == -3:
            # Redis has no record of this run: one sent by a foreign producer, a copy of a
            # run finished longer ago than the dedupe window, or Redis lost its data.
            # PostgreSQL decides.
            if self._finished_in_postgres(message.message_id):
                return StartVerdict(False, reason="DUPLICATE")
            n, entry = self._start(message.message_id, raw, floor, register=True, held=held)
            if n == -4:
                return StartVerdict(False, reason="NOT_HELD")
        if n == -2:
            return StartVerdict(False, reason="REVOKED")
        if n == -1:
            return StartVerdict(False, reason="DUPLICATE")
        return StartVerdict(True, attempt=n, entry=entry)

    def _start(self, message_id: str, raw: bytes, floor: int, *, register: bool,
               held: tuple[str, str, str] | None) -> tuple[int, bytes | None]:
        """START, waiting out a Redis failover (up to ``start_wait_s``) instead of running
        the job unchecked. A START whose reply was lost may have counted an attempt: the
        repeat counts another (the attempt number is then one high, never a job run
        twice by this worker)."""
        deadline = time.monotonic() + self.start_wait_s
        delay = 0.05
        while True:
            try:
                return self.stream.start(message_id, raw, floor, register=register, held=held)
            except _REDIS_DOWN as exc:
                if time.monotonic() + delay > deadline:
                    raise LedgerUnavailable(f"cannot start run {message_id}: Redis unreachable for "
                                            f"{self.start_wait_s:.0f} s ({type(exc).__name__}: {exc})") from None
                log.warning("START of %s waits for Redis (%s: %s)", message_id, type(exc).__name__, exc)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _finished_in_postgres(self, message_id: str) -> bool:
        try:
            with self.control().connect() as conn:
                row = conn.execute(queries.RUN_STATUS, {"m": message_id}).first()
        except Exception:
            # Unknown either way: run it (refusing could strand it forever); the ledger's
            # rules keep a FINISHED row unchanged if it was a duplicate after all.
            log.warning("Could not check run %s in PostgreSQL before starting it", message_id, exc_info=True)
            return False
        return row is not None and row[0] == "FINISHED"

    def record(self, event: Event) -> None:
        self.stream.append(encode(event))

    # -- reading it back -----------------------------------------------------------------
    def sync(self, timeout_s: float = 30.0) -> None:
        self.drainer.drain_until(timeout_s=timeout_s)

    def accepting(self) -> bool:
        return self._backlog < self.backpressure_events

    def _on_state(self, length: int) -> None:
        was = self.accepting()
        self._backlog = length
        if was and not self.accepting():
            log.error("Ledger buffer holds %d events (LEDGER_BACKPRESSURE_EVENTS=%d): this worker stops taking "
                      "new messages until PostgreSQL catches up", length, self.backpressure_events)
        elif not was and self.accepting():
            log.warning("Ledger buffer back to %d events: taking new messages again", length)

    # -- background ----------------------------------------------------------------------
    def start_background(self) -> None:
        self.warn_if_not_persistent()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._background = self._drainer()
        self._lease = Lease(self.client, self.keys.ledger_lease, self.lease_ms)
        self._thread = threading.Thread(target=self._background.run, args=(self._stop, self._lease),
                                        kwargs={"flush_s": self.flush_s, "on_state": self._on_state},
                                        name="ledger-drainer", daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(5.0)
        lease, self._lease = self._lease, None
        try:
            self.drainer.drain_until(timeout_s=5.0)
        except Exception as exc:
            log.warning("Final ledger drain incomplete (%s); another process or the next start applies the rest",
                        exc)
        if lease is not None:
            try:
                lease.release()
            except redis.RedisError:
                pass
        self._thread = None

    def warn_if_not_persistent(self) -> None:
        """A Redis without AOF loses, when it restarts, the events not yet drained."""
        info = self.stream.persistence()
        if info and not int(info.get("aof_enabled", 0)):
            log.warning("Redis persistence is off (appendonly no): if Redis restarts, queued messages and the "
                        "ledger events not yet drained (about the last %d ms) are lost. Run Redis with "
                        "appendonly yes, appendfsync everysec (docs/ledger.md).", int(self.flush_s * 1000) + 50)
