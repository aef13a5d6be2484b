"""Keeps secrets out of log lines.

dramatiq logs messages with their arguments (``Failed to process message
EXAMPLE_WITH_ARGS('hunter2')``); this filter rewrites such records so that message
arguments are redacted (positional ones by the actor's parameter names, all of them for an
actor the process does not know) and known secret values are masked in the final text,
tracebacks included. It is installed on the root handlers of every process: worker, scheduler,
exporter and CLI (:func:`install_log_redaction`).
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Middleware
from dramatiq import broker as dramatiq_broker
from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from jobcore.redaction import Redactor, get_redactor


def _describe(message: Message | MessageProxy, redactor: Redactor) -> str:
    fn = _actor_fn(message.actor_name)
    if fn is None:
        # An actor this process does not know: a positional secret has no name to go by.
        args, kwargs = redactor.positional(list(message.args), None), redactor.value(message.kwargs)
    else:
        args, kwargs = redactor.arguments(fn, message.args, message.kwargs)
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{message.actor_name}({', '.join(parts)})"


def _actor_fn(actor_name: Any) -> Any:
    """The function of ``actor_name`` on the broker this process set, if any (never
    dramatiq's ``get_broker()``, which would build a default broker)."""
    current = dramatiq_broker.global_broker
    actor = current.actors.get(actor_name) if current is not None and isinstance(actor_name, str) else None
    return actor.fn if actor is not None else None


class RedactingFilter(logging.Filter):
    """A handler filter: redacts dramatiq messages in ``record.args`` and secrets in text."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact(record)
        except Exception as exc:
            # An exception raised here would come out of the caller's logging call (a worker
            # thread logging a failed message would die of it); and an unredacted record
            # must not be written either.
            record.msg = f"[log record withheld: it could not be redacted ({type(exc).__name__})]"
            record.args, record.exc_info, record.exc_text, record.stack_info = None, None, None, None
        return True

    def _redact(self, record: logging.LogRecord) -> None:
        redactor = self._redactor or get_redactor()
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            if any(isinstance(a, (Message, MessageProxy)) for a in args):
                record.args = tuple(_describe(a, redactor) if isinstance(a, (Message, MessageProxy)) else a
                                    for a in args)
        if record.exc_info and not record.exc_text:
            # Tracebacks carry exception messages, which can carry secrets.
            record.exc_text = redactor.text(logging.Formatter().formatException(record.exc_info))
        text = record.getMessage()
        redacted = redactor.text(text)
        if redacted != text:
            record.msg, record.args = redacted, None


class ResultsAreKeptFilter(logging.Filter):
    """Drops dramatiq's "returned a value ... discarded" warning: it assumes results are
    lost without the Results middleware, but the ledger stores every result."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("dramatiq.worker") and "haven't added the Results middleware"
                    in str(record.msg))


def install_log_redaction(redactor: Redactor | None = None) -> None:
    """Attach the filters to every root handler (idempotent). Every process calls it once
    its logging is configured: workers (:class:`LogRedaction`), the scheduler
    (``python -m periodic``), the exporter (``python -m metrics``) and ``jobctl``."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))
            handler.addFilter(ResultsAreKeptFilter())


class LogRedaction(Middleware):
    """Installs :class:`RedactingFilter` in every worker process once its logging is set up."""

    @property
    def actor_options(self) -> set[str]:
        return set()

    def after_process_boot(self, broker: Any) -> None:
        install_log_redaction()
