"""Moves ledger events from the Redis stream into PostgreSQL: exactly once, in order.

Correctness rests on the drain cursor in PostgreSQL (see :mod:`ledger.store`), not on any
lock: a drainer reads the cursor, reads the stream entries after it, and commits them
together with the cursor's compare-and-set. Any number of drainers may run at once;
each entry is applied by exactly one of them, and Redis entries are trimmed only after
the commit that applied them.

The **epoch** guards against a Redis that lost its data: the stream then restarts with
new ids, possibly below the old cursor. The epoch key vanishes with the data, so a
missing or different epoch tells the drainer to read the new stream from its start.

A soft **lease** picks one process per namespace to drain continuously (the others only
stand by), which keeps idle CPU low and avoids wasted transactions; when its holder
dies the lease expires and another process takes over. Anyone may still drain on
demand: :meth:`Drainer.drain_until` is how revocation, reconciliation and the CLI make
the ledger current before they decide anything from it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from jobcore.errors import LedgerError
from ledger.events import decode_many
from ledger.store import ChunkItem, Cursor, PgStore
from ledger.stream import EventStream, StreamId, format_id, parse_id

log = logging.getLogger(__name__)

RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class LedgerLagging(LedgerError):
    """The ledger could not be brought up to date in time (PostgreSQL down or slow)."""


@dataclass(frozen=True)
class DrainOutcome:
    applied: int         # entries applied by this call
    contended: bool      # another drainer applied the chunk first
    remaining: int       # entries left in the stream (-1: not known)


class Lease:
    """A renewable, owner-checked Redis lease (``SET NX PX`` + compare-and-renew)."""

    def __init__(self, client: redis.Redis, key: str, ttl_ms: int) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(8)
        self._script = client.register_script(RENEW_LUA)

    def hold(self) -> bool:
        """Acquire or renew; True while this process holds the lease."""
        return bool(self._script(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        if self.client.get(self.key) == self.token.encode():
            self.client.delete(self.key)


class Drainer:
    """Applies the stream of one namespace to the control database."""

    def __init__(self, stream: EventStream, store: PgStore, *, chunk: int = 2000, dedupe_window_s: float = 900.0,
                 on_parked: Callable[[ChunkItem, str], None] | None = None) -> None:
        self.stream = stream
        self.store = store
        self.chunk = chunk
        self.dedupe_window_ms = int(dedupe_window_s * 1000)
        self.on_parked = on_parked
        self.applied_total = 0
        self._last_prune = 0.0
        self._last_guard = 0.0
        #: times this drainer found a Redis that lost applied writes (see EventStream.guard)
        self.lost_writes_detected = 0
        self._trimmed: StreamId | None = None
        #: ids committed by this drainer (tests check that drainers never overlap)
        self.record_ids: list[str] | None = None

    def drain_once(self) -> DrainOutcome:
        """Apply the next chunk of entries after the cursor."""
        cursor = self.store.cursor_position()
        epoch = self.stream.epoch()
        after = parse_id(cursor.last_id) if cursor.epoch == epoch else None
        if after is not None:
            self._guard(after)
        entries = self.stream.read_after(after, self.chunk)
        if not entries:
            if after is not None and self._trimmed != after:
                self.stream.trim(after)  # a trim lost with a crash after the commit
                self._trimmed = after
            return DrainOutcome(0, False, 0)
        items = []
        decoded = decode_many([e.raw for e in entries], [e.attempt for e in entries])
        for entry, event in zip(entries, decoded, strict=True):
            if isinstance(event, LedgerError):
                items.append(ChunkItem(format_id(entry.id), entry.raw, None, str(event)))
            else:
                items.append(ChunkItem(format_id(entry.id), entry.raw, event))
        new = Cursor(epoch, items[-1].stream_id)
        if not self.store.apply(cursor, new, items, self.on_parked):
            return DrainOutcome(0, True, -1)
        if self.record_ids is not None:
            self.record_ids.extend(i.stream_id for i in items)
        self.applied_total += len(items)
        remaining = self.stream.trim(entries[-1].id, self._prune_before(entries[-1].id))
        self._trimmed = entries[-1].id
        return DrainOutcome(len(items), False, remaining)

    def _guard(self, after: StreamId) -> None:
        """At most once a second: keep the stream's new ids above the cursor (see
        :meth:`EventStream.guard`), and say so loudly when Redis lost applied entries."""
        now = time.monotonic()
        if now - self._last_guard < 1.0:
            return
        self._last_guard = now
        lost = self.stream.guard(after)
        if lost is not None:
            self.lost_writes_detected += 1
            log.error("Redis lacks ledger events already applied to PostgreSQL (as far as it knows the ledger "
                      "applied %s; the drain cursor is at %s): a failover or a restore lost its newest writes. "
                      "Reconciliation re-enqueues the open runs whose messages are gone (docs/scaling.md).",
                      format_id(lost), format_id(after))

    def _prune_before(self, applied_through: StreamId) -> int:
        """Finished markers older than the dedupe window, but never ones the cursor has not
        passed (a marker is what refuses a duplicate until PostgreSQL knows the run)."""
        now = time.time()
        if now - self._last_prune < 10:
            return 0
        self._last_prune = now
        return min(int(now * 1000) - self.dedupe_window_ms, applied_through[0])

    def drain_until(self, target: StreamId | None = None, *, timeout_s: float = 30.0) -> None:
        """Return once every entry up to ``target`` (default: the newest now) is applied,
        draining here and waiting for other drainers as needed; raise
        :class:`LedgerLagging` after ``timeout_s``."""
        if target is None:
            target = self.stream.last_id()
            if target is None:
                return
        deadline = time.monotonic() + timeout_s
        delay = 0.002
        while True:
            try:
                cursor = self.store.cursor_position()
                if cursor.epoch == self.stream.epoch() and parse_id(cursor.last_id) >= target:
                    return
                outcome = self.drain_once()
                if not outcome.applied and not outcome.contended:
                    return  # nothing left after the cursor: the target was applied and trimmed
                if outcome.applied:
                    delay = 0.002
                    continue
            except redis.AuthenticationError:
                raise  # a refused password is not going to change while we wait
            except (LedgerError, redis.RedisError) as exc:
                if time.monotonic() > deadline:
                    raise LedgerLagging(f"the ledger could not be brought up to date: {exc}") from None
            except Exception as exc:  # PostgreSQL unreachable: retry until the deadline
                if time.monotonic() > deadline:
                    raise LedgerLagging(f"the ledger could not be brought up to date within {timeout_s:.0f} s: "
                                        f"{type(exc).__name__}: {str(exc).strip()}") from None
            if time.monotonic() > deadline:
                raise LedgerLagging(f"the ledger is still behind the buffer after {timeout_s:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def run(self, stop: threading.Event, lease: Lease, *, flush_s: float,
            on_state: Callable[[int], None] | None = None) -> None:
        """The background loop: drain while holding the lease, stand by otherwise.
        ``on_state`` is told the stream length after every pass (backpressure)."""
        failures = 0
        while not stop.is_set():
            try:
                if not lease.hold():
                    if on_state is not None:
                        on_state(self.stream.length())
                    stop.wait(lease.ttl_ms / 3000)
                    continue
                outcome = self.drain_once()
                failures = 0
                if on_state is not None and outcome.remaining >= 0:
                    on_state(outcome.remaining)
                if outcome.applied >= self.chunk or outcome.contended:
                    continue
                # Caught up: wait for new entries, then a flush interval more so that the
                # next transaction carries a batch rather than one event.
                if self._wait_for_entries(1.0):
                    stop.wait(flush_s)
            except Exception as exc:  # never let the drainer die; back off while PG/Redis is down
                failures += 1
                if on_state is not None:
                    try:
                        on_state(self.stream.length())  # a growing buffer must still be seen
                    except redis.RedisError:
                        pass
                backoff = min(5.0, 0.1 * 2 ** min(failures, 6))
                log.warning("Ledger drain failed (%s: %s); retrying in %.1f s", type(exc).__name__,
                            str(exc).strip()[:300], backoff)
                stop.wait(backoff)

    def _wait_for_entries(self, timeout_s: float) -> bool:
        """Block until an entry newer than the last one applied exists (XREAD BLOCK);
        False if none came within ``timeout_s``."""
        after = format_id(self._trimmed) if self._trimmed is not None else "0-0"
        return bool(self.stream.client.xread({self.stream.keys.ledger_stream: after}, count=1,
                                             block=int(timeout_s * 1000)))
