"""Builds ledger events from dramatiq messages: identity, redacted arguments, results,
progress and errors, each bounded so that nothing a job does can make its own ledger
row unwritable.

Arguments are refused at ``send()`` when PostgreSQL could not store them (a NUL
character, an unpaired surrogate, NaN): the caller gets an error naming the argument
and nothing is enqueued. Results and progress are produced by jobs after the fact, so
they are never refused: unstorable characters are replaced and values above their size
limit are stored as a marker with a preview.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dramatiq.common import q_name

from jobcore.context import OPTION
from jobcore.errors import InvalidArguments, UnserializableArguments
from jobcore.redaction import Redactor
from ledger.events import AttemptError, Pending, RunRef, dumps

_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


def fingerprint(exception_type: str, traceback_text: str) -> str:
    """Group equal failures: the exception type plus the code locations of the last
    frames, with numbers and addresses blanked so line shifts of data don't split groups."""
    frames = [line.strip() for line in traceback_text.splitlines() if line.strip().startswith("File ")][-3:]
    basis = exception_type + "|" + "|".join(_NUMBERS.sub("#", f) for f in frames)
    return hashlib.sha1(basis.encode()).hexdigest()


def pg_text(value: str, limit: int) -> str:
    """Text PostgreSQL accepts: no NUL characters, no unpaired surrogates, bounded."""
    value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def storable_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot be stored in a ``jsonb`` column, or None if it can."""
    if depth > 100:
        return "is nested more than 100 levels deep"
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character (\\x00)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired surrogate (not valid Unicode)"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {value!r} (JSON has no NaN or Infinity)"
    if isinstance(value, dict):
        for k, v in value.items():
            problem = storable_problem(k, depth + 1) or storable_problem(v, depth + 1)
            if problem:
                return f"[{k!r}] {problem}"
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problem = storable_problem(v, depth + 1)
            if problem:
                return f"[{i}] {problem}"
    return None


def _sanitize(value: Any, depth: int = 0) -> Any:
    """A JSON value PostgreSQL can store, as close to ``value`` as possible."""
    if depth > 100:
        return "<nested too deeply>"
    if isinstance(value, str):
        return pg_text(value, len(value))
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {pg_text(str(k), 10_000): _sanitize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return pg_text(repr(value), 10_000)


@dataclass(frozen=True)
class Limits:
    """Sizes the ledger stores at most (bytes of encoded JSON / characters of text)."""

    result_bytes: int = 64 * 1024
    progress_bytes: int = 8 * 1024
    traceback_chars: int = 20_000
    text_chars: int = 10_000
    preview_chars: int = 1_000


class Recorder:
    """Turns messages, results and exceptions into event fields."""

    def __init__(self, redactor: Callable[[], Redactor], limits: Limits | None = None) -> None:
        self._redactor = redactor
        self.limits = limits or Limits()

    @property
    def redactor(self) -> Redactor:
        return self._redactor()

    def run_ref(self, message: Any) -> RunRef:
        """The identifying columns of ``message``'s run."""
        ctx = message.options.get(OPTION)
        tenant = ctx.get("tenant_id") if isinstance(ctx, dict) else None
        return RunRef(message.message_id, message.actor_name, q_name(message.queue_name),
                      int(tenant) if tenant is not None else None, message.message_timestamp / 1000)

    def pending(self, fn: Callable[..., Any] | None, message: Any) -> Pending:
        """The PENDING event of a new message: arguments redacted by parameter name and
        checked to be storable (:class:`InvalidArguments` names the first one that is not)."""
        redactor = self.redactor
        args, kwargs = redactor.arguments(fn, message.args, message.kwargs)
        ctx = message.options.get(OPTION)
        context = redactor.value(ctx) if isinstance(ctx, dict) else {}
        self._check_storable(fn, message.actor_name, args, kwargs, context)
        retry_of = message.options.get("retry_of")
        return Pending(self.run_ref(message), time.time(), args, kwargs, context,
                       int(retry_of) if retry_of is not None else None)

    def _check_storable(self, fn: Callable[..., Any] | None, actor: str, args: list[Any], kwargs: dict[str, Any],
                        context: Any) -> None:
        try:
            # the codec's own encoder: what it accepts, the buffer accepts
            text = dumps([args, kwargs, context])
            text.encode("utf-8")
            if "\\u0000" not in text:
                return
        except TypeError as exc:
            raise UnserializableArguments(f"arguments of {actor} cannot be serialised to JSON: {exc}") from None
        except (ValueError, UnicodeEncodeError, RecursionError):
            pass
        names = positional_names(fn)
        for i, value in enumerate(args):
            problem = storable_problem(value)
            if problem:
                name = names[i] if i < len(names) else f"#{i}"
                raise InvalidArguments(f"argument {name!r} of {actor} {problem}: the ledger cannot store it")
        for key, value in kwargs.items():
            problem = storable_problem(key) or storable_problem(value)
            if problem:
                raise InvalidArguments(f"argument {key!r} of {actor} {problem}: the ledger cannot store it")
        problem = storable_problem(context)
        if problem:
            raise InvalidArguments(f"the job context of {actor} {problem}: the ledger cannot store it")

    def bounded(self, value: Any, limit: int) -> Any:
        """``value`` as stored: redacted, storable and at most ``limit`` bytes of JSON
        (larger values become ``{"truncated": true, "bytes": n, "preview": ...}``)."""
        try:
            value = self.redactor.value(_jsonable(value))
        except RecursionError:
            value = _sanitize(value)  # depth-capped: a result nested too deeply is cut, not lost
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            size = len(text.encode("utf-8"))
            clean = "\\u0000" not in text
        except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
            clean = False
        if not clean:
            value = _sanitize(value)
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            size = len(text.encode("utf-8"))
        if size <= limit:
            return value
        return {"truncated": True, "bytes": size, "preview": text[:self.limits.preview_chars]}

    def result(self, value: Any) -> Any:
        return None if value is None else self.bounded(value, self.limits.result_bytes)

    def progress(self, value: Any) -> Any:
        return self.bounded(value, self.limits.progress_bytes)

    def error(self, exception: BaseException, attempt: int, will_retry: bool) -> AttemptError:
        """One failed attempt, with its redacted traceback and fingerprint."""
        redactor = self.redactor
        tb = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        tb = pg_text(redactor.text(tb)[-self.limits.traceback_chars:], self.limits.traceback_chars)
        etype = f"{type(exception).__module__}.{type(exception).__qualname__}"
        return AttemptError(attempt, etype, pg_text(redactor.text(str(exception)), self.limits.text_chars), tb,
                            fingerprint(etype, tb), will_retry)

    def reason(self, exception_type: str, reason: str, attempt: int = 0) -> AttemptError:
        """Why a run ended without an exception of its own (rejected, lost, never ran)."""
        text = pg_text(self.redactor.text(reason), self.limits.text_chars)
        return AttemptError(attempt, exception_type, text, "", fingerprint(exception_type, text), False)

    def text(self, value: str) -> str:
        return pg_text(self.redactor.text(value), self.limits.text_chars)


def positional_names(fn: Callable[..., Any] | None) -> tuple[str, ...]:
    if fn is None:
        return ()
    import inspect

    try:
        return tuple(p.name for p in inspect.signature(fn).parameters.values()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except (TypeError, ValueError):
        return ()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, (dict, list, tuple, str, int, float, bool)) or value is None:
            return value  # NaN and friends: sanitised by the caller
        return repr(value)
