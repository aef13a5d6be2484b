"""Revoking runs.

:func:`revoke` decides by the run's state, atomically in the ledger:

* **queued** (PENDING, or waiting for a retry): the run becomes FINISHED/REVOKED at once.
  When its message is delivered, the ledger sees a finished run and skips it, so it never
  starts.
* **running** (STARTED): the revocation is recorded and published in Redis. The worker
  running it stops it at its next checkpoint (:func:`checkpoint`, also called by
  ``report_progress``) and, for actors that are ``interruptible`` (the default), by
  raising :class:`~jobcore.errors.JobRevoked` in the job's thread within
  ``REVOKE_POLL_MS``, the same mechanism dramatiq's time limits use. Money-moving actors
  set ``interruptible=False`` and are only stopped at checkpoints they choose. The run
  ends FINISHED/REVOKED; if it completes before noticing, it ends COMPLETED.
* **finished**: nothing changes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis
from sqlalchemy import text

from jobcore.context import current_message_id
from jobcore.db import control_engine
from jobcore.errors import JobRevoked, RunNotFound
from jobcore.settings import get_settings

_local_revoked: set[str] = set()
_lock = threading.Lock()


def revoked_key(namespace: str) -> str:
    """Redis sorted set of revoked running message ids, scored by revocation time."""
    return f"{namespace}:platform:revoked"


@dataclass(frozen=True)
class RevokeResult:
    message_id: str
    outcome: str  # "revoked" (was queued), "revoking" (running), "already-finished"
    resolution: str | None


def revoke(message_id: str, *, redis_client: redis.Redis | None = None) -> RevokeResult:
    """Revoke the run of ``message_id`` (see the module docstring for the semantics)."""
    settings = get_settings()
    if settings.ledger_mode == "redis":
        _apply_ledger_buffer()
    with control_engine().begin() as conn:
        row = conn.execute(text(
            "UPDATE job_runs SET status = 'FINISHED', resolution = 'REVOKED', finished_at = now(), "
            "revoke_requested_at = now(), retry_at = NULL, updated_at = now() "
            "WHERE message_id = :m AND (status = 'PENDING' OR (status = 'STARTED' AND retry_at IS NOT NULL)) "
            "RETURNING id"), {"m": message_id}).first()
        if row is not None:
            if settings.ledger_mode == "redis":
                # The ledger may lag the buffer: the run may already be running. Publish
                # the revocation too: a delivery checks it before starting (START_SCRIPT)
                # and a running attempt is stopped like any revoked running job.
                client = redis_client or redis.Redis.from_url(settings.redis_url)
                client.zadd(revoked_key(settings.redis_namespace), {message_id: time.time()})
            return RevokeResult(message_id, "revoked", "REVOKED")
        row = conn.execute(text(
            "UPDATE job_runs SET revoke_requested_at = now(), updated_at = now() "
            "WHERE message_id = :m AND status = 'STARTED' RETURNING id"), {"m": message_id}).first()
        if row is None:
            found = conn.execute(text("SELECT resolution FROM job_runs WHERE message_id = :m"),
                                 {"m": message_id}).first()
            if found is None:
                raise RunNotFound(f"no run with message id {message_id}")
            return RevokeResult(message_id, "already-finished", found[0])
    client = redis_client or redis.Redis.from_url(settings.redis_url)
    client.zadd(revoked_key(settings.redis_namespace), {message_id: time.time()})
    return RevokeResult(message_id, "revoking", None)


def _apply_ledger_buffer() -> None:
    """Redis mode: bring the ledger up to date with the buffer before deciding by it."""
    from jobcore.ledger import process_store

    try:
        process_store().drain_spool()
    except Exception:  # no ledger in this process, or PostgreSQL down: decide on what is there
        pass


def mark_revoked_locally(message_id: str) -> None:
    """Called by the worker's watcher when a running message was revoked."""
    with _lock:
        _local_revoked.add(message_id)


def forget(message_id: str) -> None:
    with _lock:
        _local_revoked.discard(message_id)


def is_revoked(message_id: str | None) -> bool:
    if message_id is None:
        return False
    with _lock:
        return message_id in _local_revoked


def checkpoint() -> None:
    """Raise :class:`JobRevoked` if the running job was revoked. Call it between units of
    work that are safe to stop after."""
    if is_revoked(current_message_id()):
        raise JobRevoked("run revoked by operator")
