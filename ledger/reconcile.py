"""Ledger–broker reconciliation: no run is lost when Redis loses its messages.

A Redis restarted without persistence, or a failover that dropped the newest writes,
leaves runs open in the ledger whose message exists nowhere in Redis. :func:`reconcile`
finds them and re-enqueues the same message (same ``message_id``, so the ledger row
continues) from what the ledger recorded.

A run is *lost* when, idle longer than the grace period, it is PENDING or waiting for a
retry, or STARTED on a worker that no longer heartbeats, and its message id is in none
of the namespace's queues, delay queues, in-flight sets or dead letters.

Before deciding, reconciliation waits for the ledger to take in every event already in
the buffer (:meth:`LedgerStrategy.sync`): a run acked a moment ago has its FINISHED
event there, not yet in PostgreSQL, and must not look lost. If the ledger cannot be
brought up to date, nothing is re-enqueued. A message can be between two hashes while it
moves (a delay-queue hop); Redis is scanned twice, and a run counts as lost only if both
scans missed it.

Arguments are stored redacted; a run whose arguments contained a secret cannot be
rebuilt and is closed as ERROR with that reason (an alert fires on it) instead of being
re-run with masked values.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from dramatiq import Message
from sqlalchemy import Engine

from jobcore.context import OPTION
from jobcore.keys import Keys
from jobcore.redaction import MASK
from ledger import queries
from ledger.recorder import fingerprint
from ledger.strategy import LedgerStrategy

log = logging.getLogger(__name__)

LOST_REASON = "message lost from Redis and its arguments were redacted, so it cannot be re-enqueued"
RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class ReconcileReport:
    checked: int = 0
    reenqueued: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    skipped: str | None = None  # why nothing was decided (another reconciler, ledger behind)


def present_message_ids(client: Any, keys: Keys) -> set[str]:
    """Every message id stored in the namespace: queued, delayed, in flight or dead-lettered."""
    ids: set[str] = set()
    for key in client.scan_iter(match=keys.messages_pattern, count=500):
        for _rid, data in client.hscan_iter(key, count=1000):
            try:
                ids.add(json.loads(data)["message_id"])
            except (ValueError, KeyError, TypeError, RecursionError):  # garbage: not a run of ours
                continue
    return ids


def _contains_mask(value: Any) -> bool:
    if isinstance(value, str):
        return MASK in value
    if isinstance(value, dict):
        return any(_contains_mask(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_mask(v) for v in value)
    return False


def _candidates(control: Engine, grace_s: float, live: list[str]) -> list[dict[str, Any]]:
    with control.connect() as conn:
        return [dict(r) for r in conn.execute(queries.RECONCILE_CANDIDATES,
                                              {"grace": grace_s, "live": live}).mappings()]


def reconcile(broker: Any, ledger: LedgerStrategy, control: Engine, keys: Keys, *, grace_s: float,
              sync_timeout_s: float = 30.0) -> ReconcileReport:
    """Find lost runs and re-enqueue (or close) them. Safe to run from several processes:
    an owner-checked Redis lock makes one of them do the work."""
    report = ReconcileReport()
    client = broker.client
    token = secrets.token_hex(8)
    if not client.set(keys.reconcile_lock, token, nx=True, px=120_000):
        report.skipped = "another process is reconciling"
        return report
    try:
        cutoff = (time.time() - broker.heartbeat_timeout / 1000) * 1000
        live = [w.decode() if isinstance(w, bytes) else w
                for w in client.zrangebyscore(keys.heartbeats, cutoff, "+inf")]
        candidates = _candidates(control, grace_s, live)
        report.checked = len(candidates)
        if not candidates:
            return report
        present = present_message_ids(client, keys)
        try:
            ledger.sync(sync_timeout_s)
        except Exception as exc:
            log.warning("Reconciliation skipped: the ledger could not be brought up to date (%s)", exc)
            report.skipped = f"ledger behind: {exc}"
            return report
        still_open = {r["message_id"] for r in _candidates(control, grace_s, live)}
        lost = [r for r in candidates if r["message_id"] in still_open and r["message_id"] not in present]
        if lost:
            present = present_message_ids(client, keys)  # the second look (see module docstring)
            lost = [r for r in lost if r["message_id"] not in present]
        for run in lost:
            if _contains_mask(run["args"]) or _contains_mask(run["kwargs"]):
                _close_lost(control, run)
                report.closed.append(run["message_id"])
            else:
                _reenqueue(broker, control, run)
                report.reenqueued.append(run["message_id"])
        if report.reenqueued or report.closed:
            client.hincrby(keys.stats, "reconciled", len(report.reenqueued))
            client.hincrby(keys.stats, "reconcile_closed", len(report.closed))
            log.warning("Reconciliation: %d lost runs re-enqueued, %d closed (%d checked)",
                        len(report.reenqueued), len(report.closed), report.checked)
    finally:
        client.eval(RELEASE_LUA, 1, keys.reconcile_lock, token)
    return report


def _reenqueue(broker: Any, control: Engine, run: dict[str, Any]) -> None:
    message: Message[Any] = Message(
        queue_name=run["queue_name"], actor_name=run["actor_name"], args=tuple(run["args"]),
        kwargs=dict(run["kwargs"]),
        options={OPTION: run["context"] or {}, "ledger_tracked": 1, "reconciled": 1},
        message_id=run["message_id"], message_timestamp=int(run["enqueued_at"].timestamp() * 1000))
    broker.enqueue(message)
    with control.begin() as conn:
        # Restart the grace period so a slow queue is not re-enqueued twice.
        conn.execute(queries.TOUCH_RUN, {"m": run["message_id"]})


def _close_lost(control: Engine, run: dict[str, Any]) -> None:
    with control.begin() as conn:
        conn.execute(queries.CLOSE_LOST, {"m": run["message_id"], "exception_type": "jobcore.errors.MessageLost",
                                          "message": LOST_REASON,
                                          "fingerprint": fingerprint("MessageLost", LOST_REASON)})
