"""Revoking runs, and the checkpoint a running job calls to honour a revocation.

:func:`revoke` publishes the revocation in Redis *first* (from that moment no delivery
of the run starts: the START script refuses it), then brings the ledger up to date with
everything that happened before (:meth:`LedgerStrategy.sync`), and only then decides by
the run's row, in one transaction that also records who asked:

* **queued** (PENDING, or waiting for a retry): the row becomes FINISHED/REVOKED; the
  message, when delivered, is skipped;
* **running** (STARTED): ``revoke_requested_at`` is set; the worker running it stops it
  at its next :func:`checkpoint` and, for ``interruptible`` actors (the default), by
  raising :class:`~jobcore.errors.JobRevoked` in the job's thread within
  ``REVOKE_POLL_MS``. It ends REVOKED, or COMPLETED if it finished first;
* **finished**: nothing changes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis
from dramatiq.middleware import CurrentMessage
from sqlalchemy import Engine

from jobcore.errors import JobRevoked, RunNotFound
from jobcore.keys import Keys
from jobcore.message_state import state
from ledger import queries
from ledger.strategy import LedgerStrategy


@dataclass(frozen=True)
class RevokeResult:
    message_id: str
    outcome: str  # "revoked" (was queued), "revoking" (running), "already-finished"
    resolution: str | None


def revoke(message_id: str, *, ledger: LedgerStrategy, client: redis.Redis, keys: Keys, control: Engine,
           operator: str, sync_timeout_s: float = 30.0) -> RevokeResult:
    """Revoke the run of ``message_id`` (see the module docstring)."""
    client.zadd(keys.revoked, {message_id: time.time()})
    ledger.sync(sync_timeout_s)
    with control.begin() as conn:
        outcome, resolution = "revoked", "REVOKED"  # type: str, str | None
        row = conn.execute(queries.REVOKE_QUEUED, {"m": message_id}).first()
        if row is None:
            outcome, resolution = "revoking", None
            row = conn.execute(queries.REVOKE_RUNNING, {"m": message_id}).first()
        if row is None:
            found = conn.execute(queries.RUN_STATUS, {"m": message_id}).first()
            client.zrem(keys.revoked, message_id)  # nothing left to stop
            if found is None:
                raise RunNotFound(f"no run with message id {message_id}")
            return RevokeResult(message_id, "already-finished", found[1])
        conn.execute(queries.RECORD_OPERATOR_ACTION, {
            "action": "revoke", "message_id": message_id, "run_id": row[0], "operator": operator,
            "detail": json.dumps({"outcome": outcome})})
    return RevokeResult(message_id, outcome, resolution)


def checkpoint() -> None:
    """Raise :class:`JobRevoked` if the running job was revoked. Call it between units of
    work that are safe to stop after (``report_progress`` calls it too)."""
    message = CurrentMessage.get_current_message()
    if message is not None and state(message).revoked:
        raise JobRevoked("run revoked by operator")
