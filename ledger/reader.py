"""Reading the ledger: the run lists and details that ``jobctl`` and the console show.

Lists are keyset-paginated on ``id`` (newest first): every page is an index range
scan whatever the ledger's size, never an OFFSET over a million rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, extract, func, select, tuple_

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
    # Runs with a failed attempt of this fingerprint (the console's error groups).
    fingerprint: str | None = None


def query_runs(engine: Engine, filters: RunFilter | None = None, *, limit: int = 50, before_id: int | None = None,
               after_id: int | None = None, by_enqueued: bool = False,
               before_enqueued: datetime | None = None) -> list[dict[str, Any]]:
    """Runs matching ``filters``, newest first: ``before_id`` pages back, ``after_id``
    returns only runs newer than it (live refresh).

    ``by_enqueued`` orders by (enqueued_at, id) instead of id, the order to page a time
    range in: ``ix_job_runs_enqueued_id`` then serves any window, however old, where the
    id order would walk every newer run first. Its keyset is ``(before_enqueued, before_id)``."""
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
    if f.fingerprint is not None:
        conditions.append(JobRun.id.in_(select(JobError.job_run_id).where(JobError.fingerprint == f.fingerprint)))
    if by_enqueued and before_enqueued is not None and before_id is not None:
        conditions.append(tuple_(JobRun.enqueued_at, JobRun.id) < tuple_(before_enqueued, before_id))
    elif before_id is not None:
        conditions.append(JobRun.id < before_id)
    if after_id is not None:
        conditions.append(JobRun.id > after_id)
    order = (JobRun.enqueued_at.desc(), JobRun.id.desc()) if by_enqueued else (JobRun.id.desc(),)
    stmt = select(*cols).order_by(*order).limit(limit)
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


def retry_chain(engine: Engine, run: dict[str, Any], *, depth: int = 20) -> tuple[list[dict[str, Any]],
                                                                                  list[dict[str, Any]]]:
    """The retry chain of ``run`` both ways: its ancestors (the run it retries, that run's
    own original, ..., oldest first, at most ``depth``) and its direct retries."""
    ancestors: list[dict[str, Any]] = []
    parent = run.get("retry_of")
    seen = {run["id"]}
    with engine.connect() as conn:
        while parent is not None and parent not in seen and len(ancestors) < depth:
            seen.add(parent)
            row = conn.execute(queries.RUN_BY_ID, {"id": parent}).mappings().first()
            if row is None:  # pruned by retention
                break
            ancestors.append({k: row[k] for k in ("id", "message_id", "actor_name", "status", "resolution",
                                                    "enqueued_at")})
            parent = row["retry_of"]
    ancestors.reverse()
    return ancestors, retries_of(engine, run["id"])


def operator_actions(engine: Engine, message_id: str) -> list[dict[str, Any]]:
    """Who revoked, retried, requeued or discarded the run of ``message_id``, and when."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(queries.ACTIONS_FOR_MESSAGE, {"m": message_id}).mappings()]


def recent_actions(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    """The newest operator actions, newest first."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(queries.RECENT_ACTIONS, {"n": limit}).mappings()]


def activity_buckets(engine: Engine, *, window_s: int, bucket_s: int) -> dict[str, dict[datetime, int]]:
    """Runs finished per ``bucket_s`` bucket and resolution over the last ``window_s``,
    plus failed attempts (``"attempt_errors"``): the throughput and error charts."""
    out: dict[str, dict[datetime, int]] = {}
    params = {"window": window_s, "bucket": bucket_s}
    with engine.connect() as conn:
        for bucket, resolution, n in conn.execute(queries.FINISHED_BUCKETS, params):
            out.setdefault(str(resolution), {})[bucket] = int(n)
        for bucket, n in conn.execute(queries.ERROR_BUCKETS, params):
            out.setdefault("attempt_errors", {})[bucket] = int(n)
    return out


def error_groups(engine: Engine, *, window_s: int, limit: int = 100) -> list[dict[str, Any]]:
    """Failed attempts of the last ``window_s`` grouped by fingerprint, newest group first."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(queries.ERROR_GROUPS, {"window": window_s, "limit": limit}).mappings()]


def tenant_outcomes(engine: Engine, *, window_s: int) -> dict[int, dict[str, Any]]:
    """Per tenant: runs finished and failed (ERROR, EXPIRED, REVOKED) in the last ``window_s``."""
    with engine.connect() as conn:
        return {int(r["tenant_id"]): dict(r) for r in conn.execute(queries.TENANT_OUTCOMES,
                                                                   {"window": window_s}).mappings()}


def actor_names(engine: Engine) -> list[str]:
    """Actor names present in the ledger (a loose index scan, cheap on a large ledger)."""
    with engine.connect() as conn:
        return [str(n) for (n,) in conn.execute(queries.ACTOR_NAMES)]


def rejections(engine: Engine, queue_name: str, redis_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The newest rejection reason of each dead letter of ``queue_name`` that has one."""
    if not redis_ids:
        return {}
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(queries.REJECTIONS_BY_REDIS_ID, {"q": queue_name, "ids": list(redis_ids)}).mappings():
            out.setdefault(str(row["redis_message_id"]), dict(row))
    return out
