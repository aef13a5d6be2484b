"""Reading the ledger: the run lists and details that ``jobctl`` and the console show.

Lists are keyset-paginated on ``id`` (newest first): every page is an index range
scan whatever the ledger's size, never an OFFSET over a million rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, extract, func, select

from jobcore.errors import RunNotFound
from jobcore.models import JobError, JobRun
from ledger import queries

_ROUND_MS = 1000


@dataclass(frozen=True)
class RunFilter:
    """Filters of a run list (all optional)."""

    status: str | None = None
    resolution: str | None = None
    actor: str | None = None
    tenant: int | None = None
    since: datetime | str | None = None
    until: datetime | str | None = None
    message_ids: Sequence[str] | None = None


def query_runs(engine: Engine, filters: RunFilter | None = None, *, limit: int = 50, before_id: int | None = None,
               after_id: int | None = None) -> list[dict[str, Any]]:
    """Runs matching ``filters``, newest first: ``before_id`` pages back, ``after_id``
    returns only runs newer than it (live refresh)."""
    f = filters or RunFilter()
    wait = func.round(extract("epoch", JobRun.started_at - JobRun.enqueued_at) * _ROUND_MS).label("wait_ms")
    run = func.round(extract("epoch", JobRun.finished_at - JobRun.started_at) * _ROUND_MS).label("run_ms")
    cols = [JobRun.id, JobRun.message_id, JobRun.actor_name, JobRun.queue_name, JobRun.tenant_id, JobRun.status,
            JobRun.resolution, JobRun.attempts, JobRun.enqueued_at, JobRun.started_at, JobRun.finished_at,
            JobRun.progress, JobRun.result, JobRun.args, JobRun.kwargs, JobRun.retry_of, wait, run]
    conditions: list[Any] = []
    for column, value in ((JobRun.status, f.status), (JobRun.resolution, f.resolution),
                          (JobRun.actor_name, f.actor), (JobRun.tenant_id, f.tenant)):
        if value is not None:
            conditions.append(column == value)
    if f.since is not None:
        conditions.append(JobRun.enqueued_at >= f.since)
    if f.until is not None:
        conditions.append(JobRun.enqueued_at < f.until)
    if f.message_ids is not None:
        conditions.append(JobRun.message_id.in_(list(f.message_ids)))
    if before_id is not None:
        conditions.append(JobRun.id < before_id)
    if after_id is not None:
        conditions.append(JobRun.id > after_id)
    stmt = select(*cols).order_by(JobRun.id.desc()).limit(limit)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def get_run(engine: Engine, ref: str | int) -> dict[str, Any]:
    """One run by id or message id; :class:`RunNotFound` if there is none."""
    with engine.connect() as conn:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            row = conn.execute(queries.RUN_BY_ID, {"id": int(ref)}).mappings().first()
        else:
            row = conn.execute(queries.RUN_BY_MESSAGE_ID, {"m": ref}).mappings().first()
    if row is None:
        raise RunNotFound(f"no run {ref}")
    return dict(row)


def run_errors(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    """The failed attempts of a run, oldest first."""
    stmt = (select(JobError.attempt, JobError.exception_type, JobError.message, JobError.will_retry,
                   JobError.created_at, JobError.fingerprint, JobError.traceback)
            .where(JobError.job_run_id == run_id).order_by(JobError.attempt))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def retries_of(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    """Runs started as retries of ``run_id`` (operator retries, dead-letter requeues)."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(queries.RETRIES_OF, {"id": run_id}).mappings()]
