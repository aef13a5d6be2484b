"""The ledger buffer in Redis: a stream of encoded events, plus the per-run bookkeeping
that lets a worker decide "may this delivery start?" without asking PostgreSQL.

* ``<ns>:ledger:events`` (stream): events waiting to be applied. The broker appends
  PENDING with the enqueue and the closing event with the ack/nack, each in the same
  script call as the broker operation (both or neither); :data:`START_LUA` appends
  STARTED; progress and rejected messages are appended on their own.
* ``<ns>:ledger:runs`` (hash): attempts so far of every open run; removed when the run
  finishes.
* ``<ns>:ledger:finished`` (sorted set): runs finished recently, by finish time. A
  delivery of a finished run (a redelivered or re-sent copy) is refused by START.
  Entries are kept for ``LEDGER_DEDUPE_WINDOW_S`` and never pruned before the drain
  cursor has passed them.
* ``<ns>:ledger:epoch``: the stream's life (see :mod:`ledger.drainer`).

Key names come from :class:`jobcore.keys.Keys`; nothing here spells one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import redis

from jobcore.fastscript import FastScript
from jobcore.keys import Keys

# START: may this delivery run? KEYS: revoked, finished, runs, stream[, the worker's ack
# set of the message's queue]. ARGV: message id, STARTED event, attempt floor, register
# ("1": count a run Redis does not know; "0": report it, so the caller asks PostgreSQL
# first)[, the delivery's Redis id].
# Returns {-4} when the delivery is no longer this worker's (its Redis id left the ack
# set: the sweeper took it back while this worker was cut off, or the fetch was lost in a
# failover; someone else runs it), {-2} revoked, {-1} finished, {-3} unknown run, else
# {attempt number, entry id} after appending the STARTED event with that number (field
# "n"). The closing ack of a run that finishes deletes that entry again if the drainer
# has not applied it yet: the FINISHED event carries everything it said (half the events
# for short jobs).
START_LUA = """
local mid = ARGV[1]
if KEYS[5] and redis.call('SISMEMBER', KEYS[5], ARGV[5]) == 0 then return {-4} end
if redis.call('ZSCORE', KEYS[1], mid) then return {-2} end
if redis.call('ZSCORE', KEYS[2], mid) then return {-1} end
if ARGV[4] ~= '1' and redis.call('HEXISTS', KEYS[3], mid) == 0 then return {-3} end
local n = redis.call('HINCRBY', KEYS[3], mid, 1)
local floor = tonumber(ARGV[3])
if n < floor then
  redis.call('HSET', KEYS[3], mid, floor)
  n = floor
end
return {n, redis.call('XADD', KEYS[4], '*', 'e', ARGV[2], 'n', n)}
"""

# The drainer's read: entries after an id as a flat array (id, event, attempt or "")
# instead of XRANGE's nested field lists, which cost more to parse than to apply.
# KEYS: stream. ARGV: start (an id, exclusive with a leading "("), count.
READ_LUA = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local out = {}
for _, entry in ipairs(entries) do
  local fields, e, n = entry[2], '', ''
  for j = 1, #fields, 2 do
    if fields[j] == 'e' then e = fields[j + 1] elseif fields[j] == 'n' then n = fields[j + 1] end
  end
  out[#out + 1] = entry[1]
  out[#out + 1] = e
  out[#out + 1] = n
end
return out
"""

# After a committed drain: drop the applied entries and the finished markers that are
# past the dedupe window and already applied, and remember how far the ledger got.
# KEYS: stream, finished, applied. ARGV: first stream id to keep, prune markers finished
# before this (ms; 0: skip), the last id applied.
TRIM_LUA = """
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], 0, ARGV[2])
end
redis.call('SET', KEYS[3], ARGV[3])
return redis.call('XLEN', KEYS[1])
"""

# GUARD, for the drain cursor ARGV[1]. KEYS: stream, applied.
# 1. Lost writes: this Redis's "applied" marker is behind the cursor and the cursor's
#    entry is not in the stream (not merely untrimmed): the newest writes the ledger
#    applied never reached this Redis (a failover to a lagging replica, an old backup).
#    The marker is then set to the cursor and the old marker returned (reported once).
#    No marker at all (a deployment older than it): set silently.
# 2. Ids: the stream's last generated id is raised to the cursor, so that entries added
#    from now on sort after it, whatever this Redis's clock says. XADD of an explicit id
#    and XDEL of it creates the stream if need be.
# Returns the old marker when writes were lost, else false.
GUARD_LUA = """
local target = ARGV[1]
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function below(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local lost = false
local applied = redis.call('GET', KEYS[2])
if not applied then
  redis.call('SET', KEYS[2], target)
elseif below(applied, target) and #redis.call('XRANGE', KEYS[1], target, target) == 0 then
  lost = applied
  redis.call('SET', KEYS[2], target)
end
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
if below(last, target) then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('XSETID', KEYS[1], target)
  else
    redis.call('XADD', KEYS[1], target, 'guard', '1')
    redis.call('XDEL', KEYS[1], target)
  end
end
return lost
"""

StreamId = tuple[int, int]
ZERO: StreamId = (0, 0)


def parse_id(value: bytes | str) -> StreamId:
    """``b"1700000000000-3"`` -> ``(1700000000000, 3)``."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


def next_id(value: StreamId) -> StreamId:
    """The smallest id after ``value`` (XTRIM MINID keeps ids >= its argument)."""
    return value[0], value[1] + 1


def _attempt(raw: bytes) -> int | None:
    """The attempt number field of an entry; -1 for one that is not a number (the event is
    then parked by the drainer instead of stalling it)."""
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return -1


@dataclass(frozen=True)
class Entry:
    """One stream entry: its id, the encoded event and (STARTED) the assigned attempt."""

    id: StreamId
    raw: bytes
    attempt: int | None


class EventStream:
    """The Redis half of the ledger buffer of one namespace."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._start = FastScript(client, START_LUA)
        self._read = FastScript(client, READ_LUA)
        self._trim = client.register_script(TRIM_LUA)
        self._guard = client.register_script(GUARD_LUA)

    # -- written by workers --------------------------------------------------------------
    def start(self, message_id: str, event: bytes, floor: int, *, register: bool,
              held: tuple[str, str, str] | None = None) -> tuple[int, bytes | None]:
        """Run :data:`START_LUA` for one delivery: (attempt, entry id), or (code, None) for
        a delivery that must not start (see its comment). ``held`` = (broker id, queue
        name, Redis id) checks that the delivery is still in that worker's ack set."""
        k = self.keys
        keys = [k.revoked, k.ledger_finished, k.ledger_runs, k.ledger_stream]
        args: list[Any] = [message_id, event, floor, "1" if register else "0"]
        if held is not None:
            keys.append(k.acks(held[0], held[1]))
            args.append(held[2])
        reply = self._start(keys=keys, args=args)
        return int(reply[0]), (reply[1] if len(reply) > 1 else None)

    def append(self, event: bytes) -> None:
        """Append an event that belongs to no broker operation (progress, rejected)."""
        self.client.xadd(self.keys.ledger_stream, {"e": event})

    # -- read by drainers ----------------------------------------------------------------
    def epoch(self) -> str:
        """The stream's epoch, created on first use (a Redis that lost its data has none)."""
        key = self.keys.ledger_epoch
        value = self.client.get(key)
        if value is None:
            self.client.set(key, secrets.token_hex(8), nx=True)
            value = self.client.get(key)
        return value.decode() if isinstance(value, bytes) else str(value)

    def read_after(self, after: StreamId | None, count: int) -> list[Entry]:
        """Up to ``count`` entries after ``after`` (from the start when None)."""
        start = "-" if after is None else "(" + format_id(after)
        flat: Any = self._read(keys=[self.keys.ledger_stream], args=[start, count])
        return [Entry(parse_id(flat[i]), flat[i + 1], _attempt(flat[i + 2])) for i in range(0, len(flat), 3)]

    def last_id(self) -> StreamId | None:
        """The id of the newest entry (None when the stream is empty)."""
        newest: Any = self.client.xrevrange(self.keys.ledger_stream, "+", "-", count=1)
        return parse_id(newest[0][0]) if newest else None

    def oldest(self) -> StreamId | None:
        first: Any = self.client.xrange(self.keys.ledger_stream, "-", "+", count=1)
        return parse_id(first[0][0]) if first else None

    def guard(self, cursor: StreamId) -> StreamId | None:
        """Check this Redis against the drain ``cursor`` (the last entry applied); see
        :data:`GUARD_LUA`. A Redis that lost writes the ledger already applied (a
        failover to a replica that had not received them, a restore from an older file)
        is reported: the id the ledger had applied as far as this Redis knew is returned.
        Either way the stream's next ids are made to come after the cursor: they are the
        new primary's wall clock, which, if behind the old one's, would put new entries
        below the cursor, where the drainer would never read them."""
        k = self.keys
        lost = self._guard(keys=[k.ledger_stream, k.ledger_applied], args=[format_id(cursor)])
        return parse_id(lost) if lost else None

    def length(self) -> int:
        return int(self.client.xlen(self.keys.ledger_stream))

    def trim(self, through: StreamId, prune_before_ms: int = 0) -> int:
        """Remove entries up to ``through`` (applied); returns the entries left."""
        k = self.keys
        return int(self._trim(keys=[k.ledger_stream, k.ledger_finished, k.ledger_applied],
                              args=[format_id(next_id(through)), prune_before_ms, format_id(through)]))

    def persistence(self) -> dict[str, Any]:
        """Redis's persistence settings (``aof_enabled``, ``rdb_...``) from INFO."""
        try:
            return dict(self.client.info("persistence"))
        except redis.RedisError:
            return {}
