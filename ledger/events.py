"""The ledger's transition model: what can happen to a run, as typed events, and the one
codec that turns them into the bytes the Redis buffer holds.

Every event names its run by ``message_id`` and carries enough of the run's identity
(:class:`RunRef`) to create the row, so events converge to the same row in whatever
order they are applied (see :mod:`ledger.model` for the rules and :mod:`ledger.queries`
for the same rules in SQL).

Timestamps are Unix seconds (floats): cheap to produce on the hot path, converted by
PostgreSQL with ``to_timestamp``. Values bound for ``jsonb`` columns (arguments, context,
results, progress) are embedded as JSON values, not strings, so they are encoded once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from jobcore.errors import LedgerError

#: Version of the wire format; an event of another version is refused by the drainer
#: (parked, never guessed at).
VERSION = 3


class Kind(StrEnum):
    """The transitions of a run."""

    PENDING = "P"          # sent: the row is created
    STARTED = "S"          # an attempt began (attempt number assigned by Redis)
    ATTEMPT_FAILED = "A"   # an attempt failed and will be retried (error row, retry_at)
    FINISHED = "F"         # COMPLETED / ERROR / EXPIRED / REVOKED, with the final error if any
    PROGRESS = "G"         # the running attempt reported progress
    REJECTED = "R"         # the message can never run (undecodable, unknown actor)


RESOLUTIONS = ("COMPLETED", "ERROR", "EXPIRED", "REVOKED")


@dataclass(frozen=True, slots=True)
class RunRef:
    """The identifying columns of a run: enough to create its row."""

    message_id: str
    actor_name: str
    queue_name: str
    tenant_id: int | None
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class AttemptError:
    """One failed attempt (a ``job_errors`` row)."""

    attempt: int
    exception_type: str
    message: str
    traceback: str
    fingerprint: str
    will_retry: bool


@dataclass(frozen=True, slots=True)
class Pending:
    run: RunRef
    at: float
    args: Any           # redacted, JSON value
    kwargs: Any
    context: Any
    retry_of: int | None = None
    kind: Kind = Kind.PENDING


@dataclass(frozen=True, slots=True)
class Started:
    run: RunRef
    at: float
    worker_id: str
    attempt: int = 0    # 0 until Redis assigns it (the START script)
    kind: Kind = Kind.STARTED


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    run: RunRef
    at: float
    retry_at: float
    error: AttemptError
    kind: Kind = Kind.ATTEMPT_FAILED


@dataclass(frozen=True, slots=True)
class Finished:
    run: RunRef
    at: float
    resolution: str
    attempts: int
    result: Any = None                 # JSON value (None: SQL NULL)
    started_at: float | None = None
    worker_id: str | None = None
    error: AttemptError | None = None  # the final failed attempt (ERROR), or why it never ran
    kind: Kind = Kind.FINISHED


@dataclass(frozen=True, slots=True)
class Progress:
    message_id: str
    at: float
    progress: Any
    kind: Kind = Kind.PROGRESS


@dataclass(frozen=True, slots=True)
class Rejected:
    queue_name: str
    redis_message_id: str | None
    message_id: str | None
    actor_name: str | None
    reason: str
    payload: str        # redacted text of the message
    at: float
    kind: Kind = Kind.REJECTED


Event = Pending | Started | AttemptFailed | Finished | Progress | Rejected


# -- codec -------------------------------------------------------------------------------
# A compact JSON array per event: [version, kind, ...fields in declaration order].
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _ref(r: RunRef) -> list[Any]:
    return [r.message_id, r.actor_name, r.queue_name, r.tenant_id, r.enqueued_at]


def _err(e: AttemptError | None) -> list[Any] | None:
    if e is None:
        return None
    return [e.attempt, e.exception_type, e.message, e.traceback, e.fingerprint, e.will_retry]


def encode(event: Event) -> bytes:
    """The buffer form of ``event`` (UTF-8 JSON)."""
    if isinstance(event, Pending):
        body: list[Any] = [_ref(event.run), event.at, event.args, event.kwargs, event.context, event.retry_of]
    elif isinstance(event, Started):
        body = [_ref(event.run), event.at, event.worker_id, event.attempt]
    elif isinstance(event, AttemptFailed):
        body = [_ref(event.run), event.at, event.retry_at, _err(event.error)]
    elif isinstance(event, Finished):
        body = [_ref(event.run), event.at, event.resolution, event.attempts, event.result, event.started_at,
                event.worker_id, _err(event.error)]
    elif isinstance(event, Progress):
        body = [event.message_id, event.at, event.progress]
    else:
        body = [event.queue_name, event.redis_message_id, event.message_id, event.actor_name, event.reason,
                event.payload, event.at]
    return dumps([VERSION, event.kind.value, *body]).encode()


def _unref(v: list[Any]) -> RunRef:
    return RunRef(str(v[0]), str(v[1]), str(v[2]), None if v[3] is None else int(v[3]), float(v[4]))


def _unerr(v: list[Any] | None) -> AttemptError | None:
    if v is None:
        return None
    return AttemptError(int(v[0]), str(v[1]), str(v[2]), str(v[3]), str(v[4]), bool(v[5]))


def decode(raw: bytes | str, attempt: int | None = None) -> Event:
    """Parse a buffered event; ``attempt`` is the number Redis assigned to a STARTED one.
    Raises :class:`LedgerError` for anything that is not a well-formed event."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise LedgerError(f"malformed ledger event: {exc}") from None
    return _build(data, attempt)


_KINDS = {k.value: k for k in Kind}


def _build(data: Any, attempt: int | None) -> Event:
    try:
        version, kind, *body = data
        if version != VERSION:
            raise LedgerError(f"ledger event of unknown version {version!r}")
        k = _KINDS[kind]
        if k is Kind.PENDING:
            return Pending(_unref(body[0]), float(body[1]), body[2], body[3], body[4],
                           None if body[5] is None else int(body[5]))
        if k is Kind.STARTED:
            if attempt is not None and attempt < 1:
                raise LedgerError(f"invalid attempt number {attempt!r}")
            return Started(_unref(body[0]), float(body[1]), str(body[2]),
                           int(attempt) if attempt is not None else int(body[3]))
        if k is Kind.ATTEMPT_FAILED:
            error = _unerr(body[3])
            if error is None:
                raise LedgerError("attempt-failed event without its error")
            return AttemptFailed(_unref(body[0]), float(body[1]), float(body[2]), error)
        if k is Kind.FINISHED:
            if body[2] not in RESOLUTIONS:
                raise LedgerError(f"unknown resolution {body[2]!r}")
            return Finished(_unref(body[0]), float(body[1]), str(body[2]), int(body[3]), body[4],
                            None if body[5] is None else float(body[5]), body[6], _unerr(body[7]))
        if k is Kind.PROGRESS:
            return Progress(str(body[0]), float(body[1]), body[2])
        return Rejected(str(body[0]), body[1], body[2], body[3], str(body[4]), str(body[5]), float(body[6]))
    except LedgerError:
        raise
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise LedgerError(f"malformed ledger event: {exc}") from None


def decode_many(raws: list[bytes], attempts: list[int | None]) -> list[Event | LedgerError]:
    """Decode a chunk of buffered events (the drainer's hot path): one ``json.loads`` for
    the whole chunk; an entry that is not a well-formed event becomes its error."""
    try:
        parsed = json.loads(b"[" + b",".join(raws) + b"]") if raws else []
    except ValueError:
        parsed = None
    if parsed is None or len(parsed) != len(raws):
        out: list[Event | LedgerError] = []
        for raw, attempt in zip(raws, attempts, strict=True):
            try:
                out.append(decode(raw, attempt))
            except LedgerError as exc:
                out.append(exc)
        return out
    return [_from_parsed(data, attempt) for data, attempt in zip(parsed, attempts, strict=True)]


def _from_parsed(data: Any, attempt: int | None) -> Event | LedgerError:
    try:
        return _build(data, attempt)
    except LedgerError as exc:
        return exc


def message_id_of(event: Event) -> str | None:
    """The run an event belongs to (None for a rejected message without an id)."""
    if isinstance(event, (Progress, Rejected)):
        return event.message_id
    return event.run.message_id
