"""Applies chunks of buffered events to PostgreSQL, exactly once.

A chunk is applied in one transaction together with the compare-and-set of the drain
cursor (``ledger_cursor``): the transaction commits the events *and* moves the cursor
from the position it read to the chunk's last entry, or, if another drainer moved the
cursor first, matches no cursor row and rolls back. So two drainers can never both apply
an entry, and an entry is never skipped. Events of one kind are written by one
statement per chunk (:func:`plan` groups them); an event PostgreSQL refuses is parked in
``ledger_dead_events`` inside the same transaction instead of blocking the buffer.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from jobcore.pg import connect_kwargs, install
from ledger import queries
from ledger.events import AttemptError, AttemptFailed, Event, Finished, Pending, Progress, Rejected, RunRef, Started
from ledger.model import rejection

log = logging.getLogger(__name__)

_CONNECTIVITY = (psycopg2.OperationalError, psycopg2.InterfaceError)


def is_connectivity_error(exc: BaseException) -> bool:
    """True for errors that say nothing about the data (retry later, never park)."""
    return isinstance(exc, _CONNECTIVITY) and not isinstance(exc, psycopg2.errors.QueryCanceled)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Group:
    """Events of one chunk that can be written together: each run at most once per kind,
    applied kind by kind in lifecycle order (pending, started, progress, attempt failed,
    finished). A STARTED followed by its run's FINISHED collapses into the FINISHED."""

    pending: dict[str, Pending] = field(default_factory=dict)
    started: dict[str, Started] = field(default_factory=dict)
    progress: dict[str, Progress] = field(default_factory=dict)
    failed: dict[str, AttemptFailed] = field(default_factory=dict)
    finished: dict[str, Finished] = field(default_factory=dict)
    # PENDING events folded into their run's FINISHED (written as one row insert)
    created: dict[str, Pending] = field(default_factory=dict)
    rejected: Rejected | None = None

    def add(self, event: Event) -> bool:
        """Take ``event`` if it fits this group (False: start a new group)."""
        if self.rejected is not None:
            return False
        if isinstance(event, Rejected):
            if not self.empty():
                return False
            self.rejected = event
            return True
        mid = event.message_id if isinstance(event, Progress) else event.run.message_id
        if isinstance(event, Pending):
            if mid in self.pending or mid in self.started or mid in self.progress or mid in self.failed \
                    or mid in self.finished:
                return False
            self.pending[mid] = event
        elif isinstance(event, Started):
            if mid in self.started or mid in self.progress or mid in self.failed or mid in self.finished:
                return False
            self.started[mid] = event
        elif isinstance(event, Progress):
            if mid in self.failed or mid in self.finished:
                return False
            self.progress[mid] = event  # a later report replaces an earlier one
        elif isinstance(event, AttemptFailed):
            if mid in self.failed or mid in self.finished:
                return False
            self.failed[mid] = event
        else:
            if mid in self.finished:
                return False
            start = self.started.get(mid)
            if start is not None and mid not in self.progress and mid not in self.failed:
                del self.started[mid]
                event = Finished(event.run, event.at, event.resolution, max(event.attempts, start.attempt),
                                 event.result, event.started_at if event.started_at is not None else start.at,
                                 event.worker_id or start.worker_id, event.error)
            if mid in self.pending and mid not in self.started and mid not in self.progress \
                    and mid not in self.failed:
                self.created[mid] = self.pending.pop(mid)
            self.finished[mid] = event
        return True

    def empty(self) -> bool:
        return not (self.pending or self.started or self.progress or self.failed or self.finished or self.rejected
                    or self.created)


def plan(events: Sequence[Event]) -> list[Group]:
    """Split ``events`` (in stream order) into groups; applying the groups in order has the
    effect of applying the events one by one (checked against :mod:`ledger.model`)."""
    groups = [Group()]
    for event in events:
        if not groups[-1].add(event):
            groups.append(Group())
            groups[-1].add(event)
    return [g for g in groups if not g.empty()]


def _refs(refs: Sequence[RunRef]) -> list[list[Any]]:
    return [[r.message_id for r in refs], [r.actor_name for r in refs], [r.queue_name for r in refs],
            [r.tenant_id for r in refs], [r.enqueued_at for r in refs]]


def _errors(items: Sequence[tuple[str, AttemptError, float]]) -> list[list[Any]]:
    return [[m for m, _, _ in items], [e.attempt for _, e, _ in items], [e.exception_type for _, e, _ in items],
            [e.message for _, e, _ in items], [e.traceback for _, e, _ in items],
            [e.fingerprint for _, e, _ in items], [e.will_retry for _, e, _ in items], [at for _, _, at in items]]


def write_group(cur: Any, group: Group) -> None:
    """Execute the statements of one group on ``cur`` (inside the caller's transaction)."""
    if group.rejected is not None:
        r = group.rejected
        cur.execute(queries.DRAIN_REJECTED, (r.queue_name, r.redis_message_id, r.message_id, r.actor_name,
                                             r.reason, r.payload, r.at))
        if r.message_id:
            cur.execute(queries.DRAIN_CLOSE_REJECTED, (r.at, r.at, r.message_id))
            cur.execute(queries.DRAIN_ERRORS, _errors([(r.message_id, rejection(r), r.at)]))
        return
    if group.pending:
        ps = list(group.pending.values())
        cur.execute(queries.DRAIN_PENDING, (*_refs([p.run for p in ps]), [_json(p.args) for p in ps],
                                            [_json(p.kwargs) for p in ps], [_json(p.context) for p in ps],
                                            [p.at for p in ps], [p.retry_of for p in ps]))
    if group.started:
        ss = list(group.started.values())
        cur.execute(queries.DRAIN_STARTED, (*_refs([s.run for s in ss]), [s.at for s in ss],
                                            [s.worker_id for s in ss], [s.attempt for s in ss]))
    if group.progress:
        gs = list(group.progress.values())
        cur.execute(queries.DRAIN_PROGRESS, ([g.message_id for g in gs], [_json(g.progress) for g in gs],
                                             [g.at for g in gs]))
    if group.failed:
        fs = list(group.failed.values())
        cur.execute(queries.DRAIN_ATTEMPT_FAILED, (*_refs([f.run for f in fs]), [f.at for f in fs],
                                                   [f.retry_at for f in fs], [f.error.attempt for f in fs]))
        cur.execute(queries.DRAIN_ERRORS, _errors([(f.run.message_id, f.error, f.at) for f in fs]))
    if group.finished:
        fs2 = list(group.finished.values())
        made = [group.created.get(f.run.message_id) for f in fs2]
        cur.execute(queries.DRAIN_FINISHED, (*_refs([f.run for f in fs2]), [f.at for f in fs2],
                                             [f.resolution for f in fs2], [f.attempts for f in fs2],
                                             [_json(f.result) for f in fs2], [f.started_at for f in fs2],
                                             [f.worker_id for f in fs2],
                                             [_json(p.args) if p else None for p in made],
                                             [_json(p.kwargs) if p else None for p in made],
                                             [_json(p.context) if p else None for p in made],
                                             [p.retry_of if p else None for p in made]))
        errors = [(f.run.message_id, f.error, f.at) for f in fs2 if f.error is not None]
        if errors:
            cur.execute(queries.DRAIN_ERRORS, _errors(errors))


@dataclass(frozen=True)
class Cursor:
    epoch: str
    last_id: str


@dataclass
class ChunkItem:
    """One stream entry of a chunk: decoded, or the reason it could not be."""

    stream_id: str
    raw: bytes
    event: Event | None
    error: str | None = None


class PgStore:
    """The drainer's connection to the control database (one per drainer thread)."""

    def __init__(self, dsn: str, namespace: str, *, statement_timeout_ms: int = 30_000,
                 pg_options: bool = True) -> None:
        install()
        self.dsn = dsn
        self.namespace = namespace
        self._kwargs = connect_kwargs(statement_timeout_ms=statement_timeout_ms,
                                      application_name="jobplatform-ledger", options=pg_options)
        self._conn: Any = None
        self._lock = threading.Lock()
        self._initialised = False
        self.parked = 0

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self.dsn, **self._kwargs)
            self._conn.autocommit = True
        return self._conn

    def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def cursor_position(self) -> Cursor:
        """The drain cursor of this namespace (created on first use)."""
        with self._lock:
            try:
                cur = self._connection().cursor()
                if not self._initialised:
                    cur.execute(queries.CURSOR_INIT, (self.namespace,))
                    self._initialised = True
                cur.execute(queries.CURSOR_READ, (self.namespace,))
                row = cur.fetchone()
                if row is None:  # the table was emptied under us (tests truncate it)
                    self._initialised = False
                    cur.execute(queries.CURSOR_INIT, (self.namespace,))
                    return Cursor("", "0-0")
                return Cursor(row[0], row[1])
            except BaseException:
                self.drop()
                raise

    def apply(self, expected: Cursor, new: Cursor, items: Sequence[ChunkItem],
              on_parked: Callable[[ChunkItem, str], None] | None = None) -> bool:
        """Apply ``items`` and move the cursor ``expected`` -> ``new``, in one transaction.
        False when the cursor had moved (another drainer applied these entries)."""
        with self._lock:
            try:
                return self._apply(expected, new, items, on_parked)
            except BaseException as exc:
                self.drop() if not isinstance(exc, Exception) or is_connectivity_error(exc) else self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            self._connection().cursor().execute("ROLLBACK")
        except Exception:
            self.drop()

    def _apply(self, expected: Cursor, new: Cursor, items: Sequence[ChunkItem],
               on_parked: Callable[[ChunkItem, str], None] | None) -> bool:
        cur = self._connection().cursor()
        cur.execute("BEGIN")
        cur.execute(queries.CURSOR_ADVANCE, (new.epoch, new.last_id, len(items), self.namespace,
                                             expected.epoch, expected.last_id))
        if cur.rowcount != 1:
            cur.execute("ROLLBACK")
            return False
        bad = [i for i in items if i.event is None]
        good = [i for i in items if i.event is not None]
        try:
            cur.execute("SAVEPOINT chunk")
            for group in plan([i.event for i in good if i.event is not None]):
                write_group(cur, group)
            cur.execute("RELEASE SAVEPOINT chunk")
        except Exception as exc:
            if is_connectivity_error(exc):
                raise
            # Something in the chunk is refused: find it by applying one event at a time.
            cur.execute("ROLLBACK TO SAVEPOINT chunk")
            for item in good:
                try:
                    cur.execute("SAVEPOINT one")
                    for group in plan([item.event] if item.event is not None else []):
                        write_group(cur, group)
                    cur.execute("RELEASE SAVEPOINT one")
                except Exception as one_exc:
                    if is_connectivity_error(one_exc):
                        raise
                    cur.execute("ROLLBACK TO SAVEPOINT one")
                    item.error = f"{type(one_exc).__name__}: {str(one_exc).strip()}"[:2000]
                    bad.append(item)
        for item in bad:
            reason = item.error or "undecodable"
            cur.execute(queries.DRAIN_DEAD_EVENT, (self.namespace, item.stream_id, psycopg2.Binary(item.raw), reason))
        cur.execute("COMMIT")
        for item in bad:
            self.parked += 1
            log.error("Ledger event %s refused and parked in ledger_dead_events: %s", item.stream_id,
                      item.error or "undecodable")
            if on_parked is not None:
                on_parked(item, item.error or "undecodable")
        return True
