"""Redis reads at scrape time: queue depths and heartbeats, in one pipelined round trip.

Key layout of dramatiq's RedisBroker (namespace ``ns``): ``ns:<queue>`` is the list of
ready message ids, ``ns:<queue>.msgs`` the hash of every message of the queue that is
not yet acked (ready or held by a worker), ``ns:<queue>.DQ(.msgs)`` the delay queue,
``ns:<queue>.XQ`` the dead-letter sorted set; ``ns:__heartbeats__`` scores each broker id
by its last heartbeat in ms; the scheduler heartbeats into ``ns:platform:schedulers`` the same way.

Live workers: dramatiq's enqueue script heartbeats the *sending* process too, so
``__heartbeats__`` also counts producers (the scheduler enqueues every minute and would keep
"WorkersDown" from firing). Worker processes are therefore counted from
``ns:platform:workers`` (written by worker processes only) when that key exists, and from
``__heartbeats__`` otherwise (``jobs_workers_source`` tells which was used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from jobcore.keys import Keys


@dataclass
class RedisSnapshot:
    depth: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue, kind) -> n
    workers_alive: int = 0
    workers_from_registry: bool = False
    broker_ids_alive: int = 0
    newest_worker_heartbeat_age: float | None = None
    schedulers_alive: int = 0
    # Counters the reliability mechanisms keep in ``ns:platform:stats`` and the length of
    # the ledger buffer (events waiting for PostgreSQL).
    platform_events: dict[str, int] = field(default_factory=dict)
    buffer_events: int = 0
    # seconds since the oldest buffered event was written (0 when the buffer is empty)
    buffer_oldest_age: float = 0.0
    newest_scheduler_heartbeat_age: float | None = None


def discover_queues(client: Any, namespace: str) -> set[str]:
    """Queue names that have a messages hash in Redis (covers queues no actor declares)."""
    found = set()
    for raw in client.scan_iter(match=f"{namespace}:*.msgs", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        name = key[len(namespace) + 1:-len(".msgs")]
        if name.endswith((".DQ", ".XQ")) or name.startswith("__"):
            continue
        found.add(name)
    return found


def read_redis(client: Any, namespace: str, queues: set[str], *, worker_timeout_ms: int,
               scheduler_timeout_ms: int) -> RedisSnapshot:
    """Depth of every queue (ready, in flight, delayed, dead) and the live heartbeats."""
    now_ms = time.time() * 1000
    ordered = sorted(queues)
    pipe = client.pipeline(transaction=False)
    for q in ordered:
        pipe.llen(f"{namespace}:{q}")
        pipe.hlen(f"{namespace}:{q}.msgs")
        pipe.hlen(f"{namespace}:{q}.DQ.msgs")
        pipe.zcard(f"{namespace}:{q}.XQ")
    hb, sched = Keys(namespace).heartbeats, Keys(namespace).schedulers
    registry = Keys(namespace).workers
    pipe.exists(registry)
    pipe.zcount(hb, now_ms - worker_timeout_ms, "+inf")
    pipe.zcount(registry, now_ms - worker_timeout_ms, "+inf")
    pipe.zrange(registry, -1, -1, withscores=True)
    pipe.zrange(hb, -1, -1, withscores=True)
    pipe.zcount(sched, now_ms - scheduler_timeout_ms, "+inf")
    pipe.zrange(sched, -1, -1, withscores=True)
    keys = Keys(namespace)
    pipe.hgetall(keys.stats)
    pipe.xlen(keys.ledger_stream)
    pipe.xrange(keys.ledger_stream, "-", "+", count=1)
    results = pipe.execute()
    stats, buffered, oldest_event = results[-3:]
    results = results[:-3]
    snap = RedisSnapshot()
    for i, q in enumerate(ordered):
        ready, held, delayed, dead = (int(x) for x in results[4 * i:4 * i + 4])
        snap.depth[(q, "ready")] = ready
        # The hash holds ready and fetched-but-unacked messages; the difference is in flight.
        snap.depth[(q, "in_flight")] = max(0, held - ready)
        snap.depth[(q, "delayed")] = delayed
        snap.depth[(q, "dead")] = dead
    (has_registry, broker_ids, registered, newest_registered, newest_broker, schedulers,
     newest_scheduler) = results[4 * len(ordered):]
    snap.broker_ids_alive = int(broker_ids)
    snap.workers_from_registry = bool(has_registry)
    snap.workers_alive = int(registered) if has_registry else int(broker_ids)
    newest_worker = newest_registered if has_registry else newest_broker
    snap.schedulers_alive = int(schedulers)
    snap.platform_events = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in stats.items()}
    snap.buffer_events = int(buffered)
    snap.buffer_oldest_age = _entry_age(oldest_event, now_ms)
    if newest_worker:
        snap.newest_worker_heartbeat_age = max(0.0, (now_ms - float(newest_worker[0][1])) / 1000)
    if newest_scheduler:
        snap.newest_scheduler_heartbeat_age = max(0.0, (now_ms - float(newest_scheduler[0][1])) / 1000)
    return snap


def _entry_age(entries: list[Any], now_ms: float) -> float:
    """Age of the oldest buffered ledger event from its stream id (``<ms>-<seq>``)."""
    if not entries:
        return 0.0
    entry_id = entries[0][0]
    ms = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
    return max(0.0, (now_ms - ms) / 1000)
