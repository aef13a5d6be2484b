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
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.extras
import redis
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from jobcore.errors import LedgerError

log = logging.getLogger(__name__)

Params = dict[str, Any]

_IDENTITY_COLUMNS = "message_id, actor_name, queue_name, tenant_id, args, kwargs, context, enqueued_at"
_IDENTITY_VALUES = (
    "%(message_id)s, %(actor_name)s, %(queue_name)s, %(tenant_id)s, %(args)s::jsonb, %(kwargs)s::jsonb, "
    "%(context)s::jsonb, %(enqueued_at)s"
)

SQL: dict[str, str] = {
    "pending": f"""
        INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, attempts, updated_at, retry_of)
        VALUES ({_IDENTITY_VALUES}, 'PENDING', 0, %(at)s, %(retry_of)s)
        ON CONFLICT (message_id) DO NOTHING
    """,
    "started": f"""
        INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, attempts, started_at, worker_id, updated_at)
        VALUES ({_IDENTITY_VALUES}, 'STARTED', 1, %(at)s, %(worker_id)s, %(at)s)
        ON CONFLICT (message_id) DO UPDATE
           SET status = 'STARTED', attempts = job_runs.attempts + 1, started_at = EXCLUDED.started_at,
               worker_id = EXCLUDED.worker_id, retry_at = NULL, updated_at = EXCLUDED.updated_at
         WHERE job_runs.status <> 'FINISHED'
        RETURNING attempts
    """,
    "finished": f"""
        INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, resolution, attempts, finished_at, result,
                              updated_at)
        VALUES ({_IDENTITY_VALUES}, 'FINISHED', %(resolution)s, %(attempts)s, %(at)s, %(result)s::jsonb, %(at)s)
        ON CONFLICT (message_id) DO UPDATE
           SET status = 'FINISHED', resolution = EXCLUDED.resolution, finished_at = EXCLUDED.finished_at,
               result = EXCLUDED.result, retry_at = NULL,
               attempts = GREATEST(job_runs.attempts, EXCLUDED.attempts), updated_at = EXCLUDED.updated_at
         WHERE job_runs.status <> 'FINISHED'
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
      engine: the control database engine (its pool serves the worker threads).
      redis_client: used for the spool; ``None`` disables spooling (errors then raise).
      spool_key: the Redis list holding transitions that still have to be applied.
    """

    def __init__(self, engine: Engine, redis_client: redis.Redis | None, spool_key: str) -> None:
        self.engine = engine
        self.redis = redis_client
        self.spool_key = spool_key
        self.spooled_total = 0

    # -- low level --------------------------------------------------------------------
    def _apply(self, kind: str, params: Params) -> tuple[Any, ...] | None:
        """Run the statements of ``kind`` in one transaction; return the first row of the
        first statement (``RETURNING``), if any."""
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            first: tuple[Any, ...] | None = None
            for i, name in enumerate(PLANS[kind]):
                cur.execute(SQL[name], params)
                if i == 0 and cur.description is not None:
                    first = cur.fetchone()
            conn.commit()
            cur.close()
            return first
        except BaseException:
            try:
                conn.rollback()
            except Exception:  # the connection may be the thing that broke
                conn.invalidate()
            raise
        finally:
            conn.close()

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

    def spool(self, kind: str, params: Params) -> None:
        """Keep a transition in Redis until the database can take it."""
        assert self.redis is not None
        self.redis.rpush(self.spool_key, json.dumps({"kind": kind, "params": params}, default=str))
        self.spooled_total += 1

    def drain_spool(self, *, limit: int = 10_000) -> int:
        """Apply spooled transitions in order; stop at the first connectivity error.
        Returns how many were applied. Safe to run from several processes at once: each
        event is idempotent, and a lock keeps the order within one drainer."""
        if self.redis is None:
            return 0
        lock_key = self.spool_key + ":lock"
        if not self.redis.set(lock_key, "1", nx=True, px=30_000):
            return 0
        applied = 0
        try:
            while applied < limit:
                raw = self.redis.lindex(self.spool_key, 0)
                if raw is None:
                    break
                event = json.loads(raw)
                try:
                    self._apply(event["kind"], event["params"])
                except BaseException as exc:
                    if _is_connectivity_error(exc):
                        break
                    # A transition the database rejects for another reason would block the
                    # spool forever; park it where an operator can see it.
                    log.error("Spooled %s transition rejected (%s); parked in %s:dead",
                              event.get("kind"), exc, self.spool_key)
                    self.redis.rpush(self.spool_key + ":dead", raw)
                self.redis.lpop(self.spool_key)
                applied += 1
        finally:
            self.redis.delete(lock_key)
        return applied

    def spool_length(self) -> int:
        return int(self.redis.llen(self.spool_key)) if self.redis is not None else 0

    # -- transitions --------------------------------------------------------------------
    def pending_many(self, rows: Iterable[Params]) -> None:
        """Insert PENDING rows in one multi-row statement (bulk fan-out)."""
        rows = list(rows)
        if not rows:
            return
        try:
            conn = self.engine.raw_connection()
            try:
                cur = conn.cursor()
                template = f"({_IDENTITY_VALUES}, 'PENDING', 0, %(at)s, %(retry_of)s)"
                psycopg2.extras.execute_values(
                    cur,
                    f"INSERT INTO job_runs ({_IDENTITY_COLUMNS}, status, attempts, updated_at, retry_of) "
                    "VALUES %s ON CONFLICT (message_id) DO NOTHING",
                    rows,
                    template=template,
                    page_size=1000,
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                conn.close()
        except BaseException as exc:
            if self.redis is None or not _is_connectivity_error(exc):
                raise
            for row in rows:
                self.spool("pending", row)


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
