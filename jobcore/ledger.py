"""Writes JobRun transitions to the control database.

Every transition is one idempotent, monotonic SQL statement keyed by ``message_id``:

* ``pending``  inserts the row (``ON CONFLICT DO NOTHING``);
* ``started``  upserts STARTED and bumps ``attempts`` unless the run is FINISHED; it
  returns nothing for a FINISHED run, which the caller treats as a duplicate delivery;
* ``finished`` upserts FINISHED with its resolution unless the run is already FINISHED;
* ``attempt_error`` adds the ``job_errors`` row of one failed attempt.

Because each statement carries the identifying columns and never moves a FINISHED run,
the events converge to the same row whatever order they are applied in. That is what
lets a transition that cannot reach PostgreSQL be *spooled* to a Redis list and applied
later by :class:`SpoolFlusher` without ever being dropped or moving a run backwards.

In ``LEDGER_MODE=redis`` the same list is the ledger's write buffer: every transition is
appended to it atomically with the broker operation it belongs to (see
:func:`stash_enqueue_event`, :data:`START_SCRIPT` and the broker's ack) and the flusher
applies it in batches (:meth:`LedgerStore.drain_spool`), a few statements per hundreds
of transitions instead of one round trip each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.extras
import redis
from sqlalchemy.exc import DBAPIError, OperationalError

from jobcore.errors import LedgerError

log = logging.getLogger(__name__)

Params = dict[str, Any]

_IDENTITY_COLUMNS = "message_id, actor_name, queue_name, tenant_id, args, kwargs, context, enqueued_at"
_IDENTITY_VALUES = (
    "%(message_id)s, %(actor_name)s, %(queue_name)s, %(tenant_id)s, %(args)s::jsonb, %(kwargs)s::jsonb, "
    "%(context)s::jsonb, %(enqueued_at)s"
)

_STARTED_CONFLICT = """
        ON CONFLICT (message_id) DO UPDATE
           SET status = 'STARTED', attempts = job_runs.attempts + 1, started_at = EXCLUDED.started_at,
               worker_id = EXCLUDED.worker_id, retry_at = NULL, updated_at = EXCLUDED.updated_at
         WHERE job_runs.status <> 'FINISHED'"""

_FINISHED_CONFLICT = """
        ON CONFLICT (message_id) DO UPDATE
           SET status = 'FINISHED', resolution = EXCLUDED.resolution, finished_at = EXCLUDED.finished_at,
               result = EXCLUDED.result, retry_at = NULL,
               attempts = GREATEST(job_runs.attempts, EXCLUDED.attempts), updated_at = EXCLUDED.updated_at
         WHERE job_runs.status <> 'FINISHED'"""

SQL: dict[str, str] = {
    "pending": f"""
        INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, attempts, updated_at, retry_of)
        VALUES ({_IDENTITY_VALUES}, 'PENDING', 0, %(at)s, %(retry_of)s)
        ON CONFLICT (message_id) DO NOTHING
    """,
    "started": f"""
        INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, attempts, started_at, worker_id, updated_at)
        VALUES ({_IDENTITY_VALUES}, 'STARTED', 1, %(at)s, %(worker_id)s, %(at)s)
        {_STARTED_CONFLICT}
        RETURNING attempts
    """,
    "finished": f"""
        INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, resolution, attempts, finished_at, result,
                              updated_at)
        VALUES ({_IDENTITY_VALUES}, 'FINISHED', %(resolution)s, %(attempts)s, %(at)s, %(result)s::jsonb, %(at)s)
        {_FINISHED_CONFLICT}
        RETURNING id
    """,
    # A failed attempt that will be retried: make sure the row exists and note when the
    # next attempt is due; the error row itself is added by "error_row".
    "retry_wait": f"""
        INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, attempts, retry_at, updated_at)
        VALUES ({_IDENTITY_VALUES}, 'STARTED', %(attempts)s, %(retry_at)s, %(at)s)
        ON CONFLICT (message_id) DO UPDATE
           SET retry_at = EXCLUDED.retry_at, updated_at = EXCLUDED.updated_at
         WHERE job_runs.status <> 'FINISHED'
    """,
    "error_row": """
        INSERT INTO job_errors (job_run_id, attempt, exception_type, message, traceback, fingerprint,
                                will_retry, created_at)
        SELECT id, %(attempt)s, %(exception_type)s, %(error_message)s, %(traceback)s, %(fingerprint)s,
               %(will_retry)s, %(at)s
          FROM job_runs WHERE message_id = %(message_id)s
        ON CONFLICT (job_run_id, attempt) DO NOTHING
    """,
    "progress": """
        UPDATE job_runs SET progress = %(progress)s::jsonb, updated_at = %(at)s
         WHERE message_id = %(message_id)s AND status = 'STARTED'
    """,
    # Closes a run whose message was rejected or could not be enqueued, if it has a row.
    "close": """
        UPDATE job_runs SET status = 'FINISHED', resolution = %(resolution)s, finished_at = %(at)s,
               retry_at = NULL, updated_at = %(at)s
         WHERE message_id = %(message_id)s AND status <> 'FINISHED'
    """,
    "rejected": """
        INSERT INTO rejected_messages (queue_name, redis_message_id, message_id, actor_name, reason, payload,
                                       created_at)
        VALUES (%(queue_name)s, %(redis_message_id)s, %(message_id)s, %(actor_name)s, %(reason)s,
                %(payload)s, %(at)s)
    """,
}

# The worker hot path: STARTED and FINISHED for a batch of messages in one prepared
# statement (parsed and planned once per connection), as UPDATEs from arrays. A message
# whose row does not exist yet (its PENDING was spooled) is reported as missing and then
# written with the full upsert above, which carries the row's identity.
BATCH_PREPARE = """
PREPARE ledger_batch(text[], timestamptz[], text[], text[], timestamptz[], text[], int[], jsonb[]) AS
WITH s AS (
    SELECT * FROM unnest($1, $2, $3) AS t(message_id, at, worker_id)
), su AS (
    UPDATE job_runs j
       SET status = 'STARTED', attempts = j.attempts + 1, started_at = s.at, worker_id = s.worker_id,
           retry_at = NULL, updated_at = s.at
      FROM s
     WHERE j.message_id = s.message_id AND j.status <> 'FINISHED'
    RETURNING j.message_id, j.attempts
), f AS (
    SELECT * FROM unnest($4, $5, $6, $7, $8) AS t(message_id, at, resolution, attempts, result)
), fu AS (
    UPDATE job_runs j
       SET status = 'FINISHED', resolution = f.resolution, finished_at = f.at, result = f.result,
           retry_at = NULL, attempts = GREATEST(j.attempts, f.attempts), updated_at = f.at
      FROM f
     WHERE j.message_id = f.message_id AND j.status <> 'FINISHED'
    RETURNING j.message_id
)
SELECT 'S', s.message_id, su.attempts,
       NOT EXISTS (SELECT 1 FROM job_runs x WHERE x.message_id = s.message_id)
  FROM s LEFT JOIN su USING (message_id)
UNION ALL
SELECT 'F', f.message_id, NULL, NOT EXISTS (SELECT 1 FROM job_runs x WHERE x.message_id = f.message_id)
  FROM f LEFT JOIN fu USING (message_id) WHERE fu.message_id IS NULL
"""

BATCH_EXECUTE = ("EXECUTE ledger_batch(%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::timestamptz[], "
                 "%s::text[], %s::int[], %s::jsonb[])")

# Batched application of buffered (version 2) events by the spool drainer: one statement
# per kind for a whole chunk. Each carries the attempt number it saw, so applying an event
# twice (a drain interrupted between COMMIT and LTRIM) gives the same row.
DRAIN_STARTED = """
    INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, enqueued_at, status, attempts,
                          started_at, worker_id, updated_at)
    SELECT message_id, actor_name, queue_name, tenant_id, enqueued_at, 'STARTED', attempt, at, worker_id, at
      FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::timestamptz[], %s::timestamptz[], %s::text[],
                  %s::int[]) AS t(message_id, actor_name, queue_name, tenant_id, enqueued_at, at, worker_id, attempt)
    ON CONFLICT (message_id) DO UPDATE
       SET status = 'STARTED', attempts = GREATEST(job_runs.attempts, EXCLUDED.attempts),
           started_at = EXCLUDED.started_at, worker_id = EXCLUDED.worker_id, retry_at = NULL,
           updated_at = EXCLUDED.updated_at
     WHERE job_runs.status <> 'FINISHED'
"""

DRAIN_FINISHED = """
    INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, enqueued_at, status, resolution, attempts,
                          started_at, worker_id, finished_at, result, updated_at)
    SELECT message_id, actor_name, queue_name, tenant_id, enqueued_at, 'FINISHED', resolution, attempts,
           started_at, worker_id, at, result, at
      FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::timestamptz[], %s::timestamptz[], %s::text[],
                  %s::int[], %s::jsonb[], %s::timestamptz[], %s::text[])
           AS t(message_id, actor_name, queue_name, tenant_id, enqueued_at, at, resolution, attempts, result,
                started_at, worker_id)
    ON CONFLICT (message_id) DO UPDATE
       SET status = 'FINISHED', resolution = EXCLUDED.resolution, finished_at = EXCLUDED.finished_at,
           result = EXCLUDED.result, retry_at = NULL, attempts = GREATEST(job_runs.attempts, EXCLUDED.attempts),
           started_at = COALESCE(EXCLUDED.started_at, job_runs.started_at),
           worker_id = COALESCE(EXCLUDED.worker_id, job_runs.worker_id), updated_at = EXCLUDED.updated_at
     WHERE job_runs.status <> 'FINISHED'
"""

_PENDING_MANY = (f"INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, attempts, updated_at, retry_of) "
                 "VALUES %s ON CONFLICT (message_id) DO NOTHING")
_PENDING_TEMPLATE = f"({_IDENTITY_VALUES}, 'PENDING', 0, %(at)s, %(retry_of)s)"

#: Buffered events (``LEDGER_MODE=redis``) carry this version; the drainer batches them.
EVENT_VERSION = 2
_BATCHED_KINDS = ("pending", "started", "finished")

# The STARTED step of deliveries in redis mode, atomically in Redis, for one or more
# messages at once.
#   KEYS: the namespace, the revoked set, the attempts hash, the ledger buffer
#   ARGV: per message 6 values: queue name, redis message id, message id, event prefix,
#         event suffix, attempt floor
# Returns per message -2 if the run was revoked, -1 if the message is no longer in the
# queue's payload hash (acked by another delivery: the run is finished), else the attempt
# number, after appending the STARTED event (with that number) to the buffer.
START_SCRIPT = """
local ns, revoked, attempts, spool = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local out = {}
for i = 1, #ARGV, 6 do
  local message_id = ARGV[i + 2]
  if redis.call('ZSCORE', revoked, message_id) then
    out[#out + 1] = -2
  elseif redis.call('HEXISTS', ns .. ":" .. ARGV[i] .. ".msgs", ARGV[i + 1]) == 0 then
    out[#out + 1] = -1
  else
    local n = redis.call('HINCRBY', attempts, message_id, 1)
    local floor = tonumber(ARGV[i + 5])
    if n < floor then
      redis.call('HSET', attempts, message_id, floor)
      n = floor
    end
    redis.call('RPUSH', spool, ARGV[i + 3] .. n .. ARGV[i + 4])
    out[#out + 1] = n
  end
end
return out
"""


def spool_key(namespace: str) -> str:
    """The Redis list of transitions waiting for PostgreSQL (the redis-mode buffer too)."""
    return f"{namespace}:ledger:spool"


def attempts_key(namespace: str) -> str:
    """Redis hash of attempt counters of runs in flight (redis mode)."""
    return f"{namespace}:ledger:attempts"


def event_json(kind: str, params: Params) -> str:
    """A buffered transition, as appended to the spool list."""
    return json.dumps({"v": EVENT_VERSION, "kind": kind, "params": params}, default=str, separators=(",", ":"))


def started_event_parts(params: Params) -> tuple[str, str]:
    """The STARTED event split around its attempt number (filled in by START_SCRIPT)."""
    body = json.dumps(params, default=str, separators=(",", ":"))
    return f'{{"v":{EVENT_VERSION},"kind":"started","params":{body[:-1]},"attempt":', "}}"


_enqueue_local = threading.local()


def stash_enqueue_event(redis_message_id: str, event: str) -> None:
    """Hand the PENDING event of a message about to be enqueued to the broker, which
    writes it in the same script call as the message (redis mode)."""
    stash = getattr(_enqueue_local, "events", None)
    if stash is None or len(stash) > 64:  # entries of enqueues that never happened
        stash = _enqueue_local.events = {}
    stash[redis_message_id] = event


def take_enqueue_event(redis_message_id: str) -> str | None:
    """The stashed PENDING event of ``redis_message_id``, if any (removed)."""
    stash = getattr(_enqueue_local, "events", None)
    return stash.pop(redis_message_id, None) if stash else None


# A transition kind is applied as these statements, in one transaction.
PLANS: dict[str, tuple[str, ...]] = {
    "pending": ("pending",),
    "started": ("started",),
    "finished": ("finished",),
    "retry_wait": ("retry_wait", "error_row"),
    "final_error": ("finished", "error_row"),
    "progress": ("progress",),
    "rejected": ("rejected", "close"),
    "enqueue_failed": ("close", "error_row"),
}

_CONNECTIVITY_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    OperationalError,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat()


def to_json(value: Any) -> str:
    """JSON for a jsonb column; values that are not JSON become their ``repr``."""
    return json.dumps(value, default=repr, separators=(",", ":"))


_HEX_ADDR = re.compile(r"0x[0-9a-fA-F]+|\d+")


def fingerprint(exception_type: str, traceback_text: str) -> str:
    """Group equal failures: the exception type plus the code locations of the last
    frames, with numbers and addresses blanked so line shifts of data don't split groups."""
    frames = [line.strip() for line in traceback_text.splitlines() if line.strip().startswith("File ")][-3:]
    basis = exception_type + "|" + "|".join(_HEX_ADDR.sub("#", f) for f in frames)
    return hashlib.sha1(basis.encode()).hexdigest()


def _is_connectivity_error(exc: BaseException) -> bool:
    if isinstance(exc, _CONNECTIVITY_ERRORS):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class LedgerStore:
    """Applies transitions to PostgreSQL, spooling them to Redis when it is unreachable.

    Parameters:
      dsn: the control database URL (each thread keeps one autocommit connection).
      redis_client: used for the spool; ``None`` disables spooling (errors then raise).
      spool_key: the Redis list holding transitions that still have to be applied.
    """

    def __init__(self, dsn: str, redis_client: redis.Redis | None, spool_key: str, *, mode: str = "sync") -> None:
        self.dsn = libpq_dsn(dsn)
        self.redis = redis_client
        self.spool_key = spool_key
        self.mode = mode if redis_client is not None else "sync"
        self.spooled_total = 0
        self._local = threading.local()

    # -- low level --------------------------------------------------------------------
    def _connection(self) -> Any:
        """This thread's connection, in autocommit mode: a one-statement transition is one
        round trip (no pool checkout, no pre-ping, no separate COMMIT)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.dsn, connect_timeout=5, application_name="jobplatform-ledger")
            conn.autocommit = True
            # The batch statement's plan does not depend on its arguments (always the
            # message_id index); re-planning the CTE on each execution was half of the
            # PostgreSQL CPU a job cost (measured: ~290 -> ~130 us per job at 4 per batch).
            # A generic plan is made once, from the statistics of that moment: on a just
            # truncated or young table it can be a sequential scan, kept for good (measured:
            # 1 ms jobs at 0.3x). This connection only ever looks rows up by message_id, so
            # sequential scans are ruled out for it.
            conn.cursor().execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
            conn.cursor().execute(BATCH_PREPARE)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _apply(self, kind: str, params: Params) -> tuple[Any, ...] | None:
        """Run the statements of ``kind`` as one transaction in one round trip; return the
        ``RETURNING`` row of a single-statement kind, if any."""
        plan = PLANS[kind]
        try:
            cur = self._connection().cursor()
            if len(plan) == 1:
                cur.execute(SQL[plan[0]], params)
                return cur.fetchone() if cur.description is not None else None
            # Several statements in one simple query with explicit BEGIN/COMMIT: atomic,
            # and still a single round trip.
            cur.execute("BEGIN;" + ";".join(SQL[name] for name in plan) + ";COMMIT;", params)
            return None
        except BaseException as exc:
            self._after_failure(exc)
            raise

    def _after_failure(self, exc: BaseException) -> None:
        """Leave this thread's connection usable after a failed statement: a broken or
        interrupted one is dropped (reconnect next time), a healthy one rolled back."""
        if _is_connectivity_error(exc) or not isinstance(exc, Exception):
            self._drop_connection()
        else:
            self._rollback_quietly()

    def _rollback_quietly(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            try:
                conn.cursor().execute("ROLLBACK")
            except Exception:
                self._drop_connection()

    def apply(self, kind: str, params: Params, *, spool: bool = True) -> tuple[bool, tuple[Any, ...] | None]:
        """Apply a transition. Returns ``(applied, first_row)``; ``applied`` is False when
        the database was unreachable and the transition went to the spool instead."""
        try:
            return True, self._apply(kind, params)
        except BaseException as exc:
            if not (spool and self.redis is not None and _is_connectivity_error(exc)):
                if isinstance(exc, Exception) and not isinstance(exc, LedgerError):
                    raise LedgerError(f"ledger write {kind!r} failed: {exc}") from exc
                raise
            self.spool(kind, params)
            log.warning("Control database unreachable; spooled %s transition of %s",
                        kind, params.get("message_id"))
            return False, None

    def record(self, kind: str, params: Params) -> None:
        """A transition the caller needs durable before it goes on: applied now (sync
        mode, spooled if PostgreSQL is unreachable) or appended to the buffer (redis mode)."""
        if self.mode == "redis":
            assert self.redis is not None
            self.redis.rpush(self.spool_key, event_json(kind, params))
        else:
            self.apply(kind, params)

    def spool(self, kind: str, params: Params) -> None:
        """Keep a transition in Redis until the database can take it."""
        assert self.redis is not None
        self.redis.rpush(self.spool_key, json.dumps({"kind": kind, "params": params}, default=str))
        self.spooled_total += 1

    def drain_spool(self, *, limit: int = 10_000, chunk: int = 500) -> int:
        """Apply spooled transitions in order, a chunk per transaction; stop at the first
        connectivity error. Returns how many were applied. Safe to run from several
        processes at once: each event is idempotent, and a lock keeps the order within
        one drainer."""
        if self.redis is None:
            return 0
        lock_key = self.spool_key + ":lock"
        if not self.redis.set(lock_key, "1", nx=True, px=30_000):
            return 0
        applied = 0
        try:
            while applied < limit:
                raws = self.redis.lrange(self.spool_key, 0, chunk - 1)
                if not raws:
                    break
                done = self._apply_chunk(raws)
                if done:
                    # Events appended meanwhile are at the tail; LTRIM keeps them.
                    self.redis.ltrim(self.spool_key, done, -1)
                    applied += done
                if done < len(raws):
                    break
        finally:
            self.redis.delete(lock_key)
        return applied

    def _apply_chunk(self, raws: list[Any]) -> int:
        """Apply ``raws`` in one transaction; returns how many leading events are done
        (applied or parked). On a rejected event, falls back to one event at a time and
        parks the ones the database refuses in ``<spool>:dead``."""
        events: list[tuple[bytes, Any]] = []
        for raw in raws:
            try:
                events.append((raw, json.loads(raw)))
            except ValueError:
                events.append((raw, None))
        try:
            self._apply_events(events)
            return len(events)
        except BaseException as exc:
            if _is_connectivity_error(exc):
                return 0
        for index, (raw, event) in enumerate(events):
            try:
                self._apply_events([(raw, event)])
            except BaseException as exc:
                if _is_connectivity_error(exc):
                    return index
                # A transition the database rejects for another reason would block the
                # spool forever; park it where an operator can see it.
                log.error("Spooled transition rejected (%s); parked in %s:dead", exc, self.spool_key)
                assert self.redis is not None
                self.redis.rpush(self.spool_key + ":dead", raw)
        return len(events)

    def _apply_events(self, events: list[tuple[bytes, Any]]) -> None:
        """Apply decoded spool events in one transaction. Buffered events of one kind are
        grouped into one statement; a STARTED followed by the FINISHED of the same run
        becomes one row update. An event for a run already in the current group starts
        a new group, so no statement touches a row twice."""
        cur = self._connection().cursor()
        pending: list[Params] = []
        started: dict[str, Params] = {}
        finished: dict[str, Params] = {}

        def flush() -> None:
            if pending:
                psycopg2.extras.execute_values(cur, _PENDING_MANY, pending, template=_PENDING_TEMPLATE,
                                               page_size=1000)
            if started:
                rows = list(started.values())
                cur.execute(DRAIN_STARTED, _columns(rows, "message_id", "actor_name", "queue_name", "tenant_id",
                                                    "enqueued_at", "at", "worker_id", "attempt"))
            if finished:
                rows = list(finished.values())
                cur.execute(DRAIN_FINISHED, _columns(rows, "message_id", "actor_name", "queue_name", "tenant_id",
                                                     "enqueued_at", "at", "resolution", "attempts", "result",
                                                     "started_at", "worker_id"))
            pending.clear()
            started.clear()
            finished.clear()

        try:
            cur.execute("BEGIN")
            for _raw, event in events:
                if not isinstance(event, dict) or "kind" not in event or "params" not in event:
                    raise LedgerError("malformed spool event")
                kind, params = event["kind"], event["params"]
                if event.get("v") == EVENT_VERSION and kind in _BATCHED_KINDS:
                    message_id = params["message_id"]
                    if kind == "pending":
                        pending.append({"retry_of": None, **params})
                    elif kind == "started":
                        if message_id in started or message_id in finished:
                            flush()
                        started[message_id] = params
                    else:
                        if message_id in finished:
                            flush()
                        start = started.pop(message_id, None)
                        if start is not None:
                            params = {**params, "started_at": params.get("started_at") or start["at"],
                                      "attempts": max(int(params.get("attempts") or 0), int(start["attempt"]))}
                        finished[message_id] = params
                    continue
                flush()
                for name in PLANS[kind]:
                    cur.execute(SQL[name], params)
            flush()
            cur.execute("COMMIT")
        except BaseException as exc:
            self._after_failure(exc)
            raise

    def spool_length(self) -> int:
        return int(self.redis.llen(self.spool_key)) if self.redis is not None else 0

    # -- transitions --------------------------------------------------------------------
    def pending_many(self, rows: Iterable[Params]) -> None:
        """Insert PENDING rows in one multi-row statement per 1,000 (bulk fan-out)."""
        rows = list(rows)
        if not rows:
            return
        try:
            cur = self._connection().cursor()
            psycopg2.extras.execute_values(cur, _PENDING_MANY, rows, template=_PENDING_TEMPLATE, page_size=1000)
        except BaseException as exc:
            self._drop_connection()
            if self.redis is None or not _is_connectivity_error(exc):
                raise
            for row in rows:
                self.spool("pending", row)

    def batch(self, started: list[Params], finished: list[Params]
              ) -> tuple[dict[str, int | None], set[str]] | None:
        """STARTED and FINISHED for many messages in one round trip.

        ``started`` items need ``message_id``, ``at``, ``worker_id``; ``finished`` items
        ``message_id``, ``at``, ``resolution``, ``attempts``, ``result`` (JSON text).
        Returns ``(started_attempts, missing)``: attempts per started message (None when
        its run is already FINISHED), and the message ids that have no row at all (the
        caller upserts those with their identity). None when the database was
        unreachable; nothing was written then.
        """
        try:
            cur = self._connection().cursor()
            cur.execute(BATCH_EXECUTE, (
                [p["message_id"] for p in started], [p["at"] for p in started], [p["worker_id"] for p in started],
                [p["message_id"] for p in finished], [p["at"] for p in finished],
                [p["resolution"] for p in finished], [p["attempts"] for p in finished],
                [p["result"] for p in finished],
            ))
            rows = cur.fetchall()
        except BaseException as exc:
            self._drop_connection()
            if self.redis is None or not _is_connectivity_error(exc):
                raise
            return None
        attempts: dict[str, int | None] = {}
        missing: set[str] = set()
        for kind, message_id, n, is_missing in rows:
            if is_missing:
                missing.add(message_id)
            elif kind == "S":
                attempts[message_id] = n
        return attempts, missing


def _columns(rows: list[Params], *names: str) -> list[list[Any]]:
    """Column arrays (for ``unnest``) of ``names`` over ``rows``; absent values are NULL."""
    return [[row.get(name) for row in rows] for name in names]


def libpq_dsn(url: str) -> str:
    """A libpq URL from an SQLAlchemy one (``postgresql+psycopg2://`` → ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return ("postgresql" if scheme.startswith("postgres") else scheme) + sep + rest


_process_store: Callable[[], LedgerStore] | None = None


def register_process_store(factory: Callable[[], LedgerStore]) -> None:
    """Make ``factory`` the source of this process's store (the ledger middleware does it)."""
    global _process_store
    _process_store = factory


def process_store() -> LedgerStore:
    """The ledger store of this process; raises if no ledger middleware is configured."""
    if _process_store is None:
        raise LedgerError("no ledger configured in this process (import the actors package)")
    return _process_store()


def identity_params(
    *,
    message_id: str,
    actor_name: str,
    queue_name: str,
    tenant_id: int | None,
    args: list[Any],
    kwargs: Mapping[str, Any],
    context: Mapping[str, Any],
    enqueued_at: datetime,
) -> Params:
    """The identifying columns every transition carries (so any of them can create the row)."""
    return {
        "message_id": message_id,
        "actor_name": actor_name,
        "queue_name": queue_name,
        "tenant_id": tenant_id,
        "args": to_json(args),
        "kwargs": to_json(dict(kwargs)),
        "context": to_json(dict(context)),
        "enqueued_at": iso(enqueued_at),
    }


class SpoolFlusher:
    """Background thread that drains the ledger spool every ``interval`` seconds."""

    def __init__(self, store: LedgerStore, interval: float = 1.0,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.store = store
        self.interval = interval
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-spool-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        # One last attempt so a clean shutdown leaves nothing behind when the DB is back.
        try:
            self.store.drain_spool()
        except Exception:
            log.warning("Final spool drain failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.store.spool_length():
                    n = self.store.drain_spool()
                    if n:
                        log.info("Applied %d spooled ledger transitions", n)
            except Exception as exc:  # never let the flusher die
                if self.on_error:
                    self.on_error(exc)
                log.warning("Spool drain failed: %s", exc)
                time.sleep(self.interval)


class _Op:
    __slots__ = ("kind", "params", "identity", "done", "result", "error")

    def __init__(self, kind: str, params: Params, identity: Callable[[], Params] | None) -> None:
        self.kind = kind
        self.params = params
        self.identity = identity
        self.done = threading.Event()
        self.result: tuple[bool, tuple[Any, ...] | None] = (False, None)
        self.error: BaseException | None = None

    def full_params(self) -> Params:
        """Params with the row identity, for the upsert that can create the row."""
        return {**self.identity(), **self.params} if self.identity is not None else self.params


class LedgerWriter:
    """Applies the STARTED and FINISHED transitions of all job threads of one worker
    process in batches: while one batch is in flight the others queue up, and the next
    round trip writes them all with one prepared statement.

    Nothing is buffered past its caller: :meth:`submit` returns only once its transition
    is committed (or spooled), and dramatiq acks a message only after the middleware
    returns, so a SIGKILL can lose no transition of an acked message.
    """

    BATCH_MAX = 256

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.ops = 0

    def submit(self, kind: str, params: Params, identity: Callable[[], Params] | None = None
               ) -> tuple[bool, tuple[Any, ...] | None]:
        """Apply ``kind`` like :meth:`LedgerStore.apply`, batched with concurrent callers.
        For "started"/"finished", ``params`` may omit the row identity; ``identity``
        supplies it when the row has to be created or the transition spooled."""
        op = self.submit_nowait(kind, params, identity)
        op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    def submit_nowait(self, kind: str, params: Params, identity: Callable[[], Params] | None = None) -> _Op:
        """Queue a transition and return at once; wait on ``op.done`` before relying on it
        (the ledger middleware waits in ``before_ack``, so a message is never acked
        before its FINISHED is committed or spooled)."""
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
                    self._thread.start()
        op = _Op(kind, params, identity)
        self._queue.put(op)
        return op

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._process(batch)
            except BaseException as exc:  # never leave a caller waiting
                for op in batch:
                    if not op.done.is_set():
                        op.error = exc
            finally:
                for op in batch:
                    op.done.set()
                self.batches += 1
                self.ops += len(batch)

    def _process(self, batch: list[_Op]) -> None:
        started: list[_Op] = []
        finished: list[_Op] = []
        singles: list[_Op] = []
        ids: set[str] = set()
        for op in batch:
            message_id = str(op.params.get("message_id"))
            # One statement cannot update the same row twice; such an op goes on its own.
            if op.kind in ("started", "finished") and message_id not in ids:
                (started if op.kind == "started" else finished).append(op)
                ids.add(message_id)
            else:
                singles.append(op)
        if started or finished:
            self._batch(started, finished)
        for op in singles:
            self._single(op)

    def _batch(self, started: list[_Op], finished: list[_Op]) -> None:
        try:
            outcome = self.store.batch([op.params for op in started], [op.params for op in finished])
        except Exception:
            # A row the database rejects must not fail its neighbours: one by one.
            for op in started + finished:
                self._single(op)
            return
        if outcome is None:  # database unreachable: spool, with identities
            for op in started + finished:
                self.store.spool(op.kind, op.full_params())
                op.result = (False, None)
                op.done.set()
            return
        attempts, missing = outcome
        for op in started + finished:
            message_id = op.params["message_id"]
            if message_id in missing:
                self._single(op)
                continue
            if op.kind == "started":
                n = attempts.get(message_id)
                op.result = (True, (n,) if n is not None else None)
            else:
                op.result = (True, None)
            op.done.set()

    def _single(self, op: _Op) -> None:
        try:
            op.result = self.store.apply(op.kind, op.full_params())
        except BaseException as exc:
            op.error = exc
        op.done.set()
