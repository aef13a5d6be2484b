"""The ledger's rules, in plain Python: how each event changes a run's row.

This is the specification that :mod:`ledger.queries` implements in SQL, the store of the
in-memory strategy (:mod:`ledger.memory`) and the model of the property-based test that
drives the real SQL. The rules make the events commute where it matters:

* a FINISHED run never changes again (only error rows may still be added);
* attempts never go down; a stale STARTED or ATTEMPT_FAILED (an older attempt) does not
  move a row that a later attempt already moved;
* any event can create the row (it carries the run's identity), so a lost or late
  PENDING never loses the rest of the run;
* error rows are unique per (run, attempt).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ledger.events import AttemptError, AttemptFailed, Event, Finished, Pending, Progress, Rejected, RunRef, Started


@dataclass(frozen=True)
class Row:
    """A ``job_runs`` row (with its ``job_errors``, by attempt)."""

    message_id: str
    actor_name: str
    queue_name: str
    tenant_id: int | None
    enqueued_at: float
    status: str = "PENDING"
    resolution: str | None = None
    attempts: int = 0
    args: Any = field(default_factory=list)
    kwargs: Any = field(default_factory=dict)
    context: Any = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None
    result: Any = None
    progress: Any = None
    worker_id: str | None = None
    retry_of: int | None = None
    errors: tuple[tuple[int, AttemptError], ...] = ()

    def with_error(self, error: AttemptError | None) -> Row:
        if error is None or any(a == error.attempt for a, _ in self.errors):
            return self
        return replace(self, errors=tuple(sorted((*self.errors, (error.attempt, error)), key=lambda e: e[0])))


def _new(run: RunRef, **values: Any) -> Row:
    return Row(run.message_id, run.actor_name, run.queue_name, run.tenant_id, run.enqueued_at, **values)


def apply(row: Row | None, event: Event) -> Row | None:
    """The row after ``event`` (``row`` is None when the run has no row yet). Rejected
    messages are recorded elsewhere; here they only close their run, if it has a row."""
    if isinstance(event, Pending):
        if row is not None:
            return row
        return _new(event.run, args=event.args, kwargs=event.kwargs, context=event.context,
                    retry_of=event.retry_of)
    if isinstance(event, Started):
        if row is None:
            return _new(event.run, status="STARTED", attempts=event.attempt, started_at=event.at,
                        worker_id=event.worker_id)
        if row.status == "FINISHED" or event.attempt < row.attempts:
            return row
        return replace(row, status="STARTED", attempts=event.attempt, started_at=event.at,
                       worker_id=event.worker_id, retry_at=None)
    if isinstance(event, AttemptFailed):
        attempt = event.error.attempt
        if row is None:
            row = _new(event.run, status="STARTED", attempts=attempt, retry_at=event.retry_at)
        elif row.status != "FINISHED" and attempt >= row.attempts:
            row = replace(row, status="STARTED", attempts=attempt, retry_at=event.retry_at)
        return row.with_error(event.error)
    if isinstance(event, Finished):
        if row is None:
            row = _new(event.run, status="FINISHED", resolution=event.resolution, attempts=event.attempts,
                       started_at=event.started_at, finished_at=event.at, result=event.result,
                       worker_id=event.worker_id)
        elif row.status != "FINISHED":
            row = replace(row, status="FINISHED", resolution=event.resolution,
                          attempts=max(row.attempts, event.attempts), finished_at=event.at,
                          result=event.result, retry_at=None,
                          started_at=event.started_at if event.started_at is not None else row.started_at,
                          worker_id=event.worker_id if event.worker_id is not None else row.worker_id)
        return row.with_error(event.error)
    if isinstance(event, Progress):
        if row is None or row.status == "FINISHED":
            return row
        return replace(row, progress=event.progress)
    if isinstance(event, Rejected):
        if row is None:
            return row
        if row.status != "FINISHED":
            row = replace(row, status="FINISHED", resolution="ERROR", finished_at=event.at, retry_at=None)
        return row.with_error(rejection(event))
    raise TypeError(f"not a ledger event: {event!r}")


def rejection(event: Rejected) -> AttemptError:
    """The error row a rejected message leaves on its run (attempt 0)."""
    return AttemptError(0, "jobcore.errors.Rejected", event.reason, "", "rejected", False)


def revoke_queued(row: Row | None, at: float) -> Row | None:
    """An operator's revoke of a run that is not running: PENDING, or waiting for a retry."""
    if row is None or not (row.status == "PENDING" or (row.status == "STARTED" and row.retry_at is not None)):
        return row
    return replace(row, status="FINISHED", resolution="REVOKED", finished_at=at, retry_at=None)
