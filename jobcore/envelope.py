"""What a message fetched from Redis must look like before anything acts on it.

Anyone who can write to Redis can put bytes in a queue: a producer of another version, a
broken script, a hand-made "requeue". dramatiq decodes any JSON object with the right
keys into a :class:`~dramatiq.Message` without looking at the values, and the worker,
the middleware and the ledger then trust their types: a ``queue_name`` of another queue
killed a worker thread (``KeyError`` in dramatiq's post-processing), an ``options`` list
or a ``kwargs`` list killed the consumer or a worker thread, ``retries: 1e30`` stopped
the whole namespace's ledger drain, an ``eta`` on a ready queue held a message in memory
for as long as it said, a 100-character ``message_id`` made its ledger rows unwritable.

:func:`decode_message` decodes *and* checks the envelope: the seven fields dramatiq
writes, each of the right type and size, and every option that the platform or the
dramatiq middleware it uses reads (the table :data:`OPTION_RULES`). Unknown options are
left alone (middleware of a newer version may add some). A message that fails is not a
message: :class:`~dramatiq.errors.DecodeError` is raised with an
:class:`~jobcore.errors.InvalidMessage` naming the field, and the consumer dead-letters
it and records why (``rejected_messages``). Reasons name fields and types, never values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.errors import DecodeError
from dramatiq.message import Message

from jobcore.errors import InvalidMessage

#: ``job_runs.message_id`` and ``rejected_messages.redis_message_id`` are VARCHAR(64).
MAX_ID_CHARS = 64
#: ``actor_name`` and ``queue_name`` columns are VARCHAR(200).
MAX_NAME_CHARS = 200
#: Millisecond timestamps and durations above this (the year 2286) are garbage; they also
#: overflow what the ledger's timestamp columns and Redis scores represent exactly.
MAX_MS = 10**13
#: More retries than this is not a count any policy produces (and Redis stores attempts
#: as doubles: a count beyond 2**53 is no longer an integer there).
MAX_COUNT = 1_000_000
#: Arguments and options nested deeper than this are refused, as ``send()`` refuses them.
MAX_DEPTH = 100
INT32_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1

FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")

Rule = Callable[[Any], str | None]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def identifier(limit: int) -> Rule:
    """A printable string of 1 to ``limit`` characters (no NUL, control characters or lone
    surrogates: PostgreSQL and the logs must be able to hold it as it is)."""
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"is {_kind(value)}; expected a string"
        if not 0 < len(value) <= limit:
            return f"has {len(value)} characters; expected 1 to {limit}"
        if not value.isprintable():
            return "contains a control character or an unpaired surrogate"
        return None
    return check


def integer(low: int, high: int, *, optional: bool = False) -> Rule:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not _is_int(value):
            return f"is {_kind(value)}; expected an integer"
        if not low <= value <= high:
            return f"is out of range; expected {low} to {high}"
        return None
    return check


def number(low: float, high: float, *, optional: bool = False) -> Rule:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not (_is_int(value) or isinstance(value, float)):
            return f"is {_kind(value)}; expected a number"
        if not (math.isfinite(value) and low <= value <= high):
            return f"is out of range; expected {low} to {high}"
        return None
    return check


def of_type(*types: type, optional: bool = True) -> Rule:
    names = " or ".join(t.__name__ for t in types)

    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            return None
        return f"is {_kind(value)}; expected {names}"
    return check


def never(value: Any) -> str | None:
    """Options that hold Python objects (exception classes, predicates): no JSON message
    can carry them, so one that has them was not written by dramatiq."""
    return "cannot come from a message (it is an actor option holding Python objects)"


def context(value: Any) -> str | None:
    """The job context (:mod:`jobcore.context`): the ledger stores ``tenant_id`` in an
    INTEGER column; ``extra`` is merged as a mapping."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"is {_kind(value)}; expected an object"
    problem = integer(-INT32_MAX - 1, INT32_MAX, optional=True)(value.get("tenant_id"))
    if problem:
        return f"tenant_id {problem}"
    if not isinstance(value.get("extra") or {}, dict):
        return f"extra is {_kind(value.get('extra'))}; expected an object"
    return None


#: Every message option that the platform or the dramatiq middleware in its stack reads,
#: with what it must be. ``eta`` is also refused outside a delay queue (see below).
OPTION_RULES: dict[str, Rule] = {
    "redis_message_id": identifier(MAX_ID_CHARS),
    "eta": number(0, MAX_MS),
    "due_at_ms": number(0, MAX_MS, optional=True),
    "retries": integer(0, MAX_COUNT),
    "max_retries": integer(0, MAX_COUNT, optional=True),
    "min_backoff": number(0, MAX_MS, optional=True),
    "max_backoff": number(0, MAX_MS, optional=True),
    "max_age": number(0, MAX_MS, optional=True),
    "time_limit": number(0, MAX_MS, optional=True),
    "ledger_tracked": of_type(bool, int),
    "job_context": context,
    "retry_of": integer(1, BIGINT_MAX, optional=True),
    "scheduled_at": of_type(str),
    "schedule_tick_id": integer(1, BIGINT_MAX, optional=True),
    "schedule_name": of_type(str),
    "throws": never,
    "retry_when": never,
    "retry_on_timeout": of_type(bool),
    "on_success": of_type(str),
    "on_failure": of_type(str),
    "pipe_target": of_type(dict),
    "pipe_ignore": of_type(bool),
}


def envelope_problem(fields: Any, queue_name: str, data: bytes = b"") -> str | None:
    """Why ``fields`` (a decoded payload fetched from ``queue_name``) is not a message this
    worker can process, or None if it is. ``data`` (the raw payload) only makes the depth
    check cheap: a payload with few brackets cannot be deeply nested."""
    if not isinstance(fields, dict):
        return f"the payload is a JSON {_kind(fields)}, not an object"
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        return f"the payload has no {', '.join(missing)}"
    extra = sorted(str(k)[:40] for k in fields if k not in FIELDS)
    if extra:
        return f"the payload has unknown fields {extra}"
    if fields["queue_name"] != queue_name:
        got = fields["queue_name"]
        shown = repr(got[:MAX_NAME_CHARS]) if isinstance(got, str) else _kind(got)
        return f"queue_name is {shown}, but the message was in queue {queue_name!r}"
    for name, rule in (("actor_name", identifier(MAX_NAME_CHARS)), ("message_id", identifier(MAX_ID_CHARS)),
                       ("message_timestamp", integer(0, MAX_MS))):
        problem = rule(fields[name])
        if problem:
            return f"{name} {problem}"
    for name, expected in (("args", list), ("kwargs", dict), ("options", dict)):
        if not isinstance(fields[name], expected):
            return f"{name} is {_kind(fields[name])}; expected {'an array' if expected is list else 'an object'}"
    options = fields["options"]
    if "redis_message_id" not in options:
        return "options has no redis_message_id"
    for key, value in options.items():
        option_rule = OPTION_RULES.get(key)
        problem = option_rule(value) if option_rule is not None else None
        if problem:
            return f"options.{key} {problem}"
    if "eta" in options and not queue_name.endswith(".DQ"):
        # Only delay-queue messages are scheduled; on a ready queue dramatiq would hold the
        # message in the worker's memory until its eta, however far away.
        return "options.eta is set on a message outside a delay queue"
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _depth(fields) > MAX_DEPTH:
        return f"the payload is nested more than {MAX_DEPTH} levels deep"
    return None


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion (so no RecursionError)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH + 1:
                    return deepest
            stack.extend((child, depth) for child in item)
    return deepest


def decode_message(data: bytes, queue_name: str) -> Message[Any]:
    """The message in ``data``, fetched from ``queue_name``.

    Raises :class:`~dramatiq.errors.DecodeError` (the cause says why) if ``data`` is not
    JSON, or not a message envelope of the right shape and types (module docstring)."""
    try:
        fields = dramatiq.get_encoder().decode(data)
    except Exception as exc:
        # dramatiq's own error quotes the whole payload (positional secrets and all); the
        # reason recorded names only what went wrong and where.
        inner = getattr(exc, "error", None) if isinstance(exc, DecodeError) else exc
        error = InvalidMessage(f"not a JSON message: {inner or type(exc).__name__}")
        raise DecodeError("Failed to decode message.", data, error) from error
    problem = envelope_problem(fields, queue_name, data)
    if problem is not None:
        error = InvalidMessage(problem)
        raise DecodeError("Invalid message.", data, error) from error
    fields["args"] = tuple(fields["args"])
    return Message(**fields)
