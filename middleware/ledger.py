"""The JobRun ledger middleware: thin hooks over the injected ledger strategy.

* ``before_process_message``: the strategy decides whether the delivery may start (a
  revoked run, or a copy of a finished one, is skipped) and records STARTED.
* ``after_process_message`` / ``after_skip_message`` / ``before_nack``: the event that
  closes the delivery (COMPLETED with its result, a failed attempt that will be retried,
  ERROR, EXPIRED, REVOKED, REJECTED) is left on the delivery state; the broker's
  ack/nack carries it, in the same script call.
* Undecodable messages are recorded as rejected.

PENDING is not a hook here: the broker writes it with the enqueue itself.

It must sit *after* validation, context and expiry in the stack (their ``before_``
hooks run first) and *before* the retry policy (whose ``after_`` hook then runs first
and decides "retry or final").
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from dramatiq import Middleware
from dramatiq.common import q_name
from dramatiq.errors import ActorNotFound

from jobcore.envelope import MAX_ID_CHARS, MAX_NAME_CHARS, identifier
from jobcore.errors import AlreadyFinished, JobRevoked, NotHeld
from jobcore.message_state import state
from ledger.events import AttemptFailed, Finished, Rejected
from ledger.strategy import LedgerStrategy

log = logging.getLogger(__name__)


class Ledger(Middleware):
    """Records every delivery's transitions through ``ledger`` (see module docstring)."""

    def __init__(self, ledger: LedgerStrategy) -> None:
        self.ledger = ledger

    @property
    def actor_options(self) -> set[str]:
        # store_result=False keeps large or sensitive return values out of the ledger.
        return {"store_result"}

    def before_process_message(self, broker: Any, message: Any) -> None:
        verdict = self.ledger.start(message, broker.broker_id)
        st = state(message)
        if not verdict.run:
            st.skip_reason = verdict.reason
            if verdict.reason == "NOT_HELD":
                log.warning("Dropping %s (%s): this worker no longer holds it (taken back by the sweeper while "
                            "this worker was cut off from Redis, or its fetch was lost in a failover)",
                            message.message_id, message.actor_name)
                raise NotHeld(f"delivery of {message.message_id} is no longer held by this worker")
            log.info("Skipping %s (%s): its run is %s", message.message_id, message.actor_name,
                     "revoked" if verdict.reason == "REVOKED" else "already finished")
            raise AlreadyFinished(f"run {message.message_id} is {verdict.reason}")
        st.attempt = verdict.attempt
        st.started_at = time.time()
        st.started_entry = verdict.entry
        # The run has a row now (STARTED creates it). A message from a foreign producer
        # lacks the mark: without it, its retry was taken for a new run of a known id and
        # silently not enqueued (the run stayed STARTED until reconciliation re-sent it
        # with the arguments the ledger never had).
        message.options["ledger_tracked"] = 1

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        st = state(message)
        recorder = self.ledger.recorder
        now = time.time()
        run = recorder.run_ref(message)
        attempt = st.attempt or 1
        if exception is None or isinstance(exception, JobRevoked):
            value = None
            if exception is None:
                actor = broker.actors.get(message.actor_name)
                if actor is None or actor.options.get("store_result", True):
                    value = recorder.result(result)
            st.closing = Finished(run, now, "COMPLETED" if exception is None else "REVOKED", attempt, value,
                                  st.started_at, broker.broker_id)
            return
        error = recorder.error(exception, attempt, st.will_retry)
        if st.will_retry:
            st.closing = AttemptFailed(run, now, now + (st.retry_delay_ms or 0) / 1000, error)
        else:
            st.closing = Finished(run, now, "ERROR", attempt, None, st.started_at, broker.broker_id, error)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        st = state(message)
        if st.skip_reason in ("DUPLICATE", "NOT_HELD"):
            return  # finished already, or someone else's delivery: nothing to add
        run = self.ledger.recorder.run_ref(message)
        if st.skip_reason in ("EXPIRED", "REVOKED"):
            st.closing = Finished(run, time.time(), st.skip_reason, 0)
            return
        # REJECTED, or a skip by middleware that did not say why: the run can never
        # complete, so close it visibly rather than leave it PENDING forever.
        reason = self.ledger.recorder.reason("jobcore.errors.Rejected", st.skip_detail or "skipped by middleware")
        st.closing = Finished(run, time.time(), "ERROR", 0, error=reason)

    def before_nack(self, broker: Any, message: Any) -> None:
        st = state(message)
        exc = getattr(message, "_exception", None)
        if st.closing is None and isinstance(exc, ActorNotFound):
            # dramatiq dead-letters a message for an actor this worker does not know
            # without processing it: record why, and close its run.
            st.closing = Rejected(q_name(message.queue_name), message.options.get("redis_message_id"),
                                  message.message_id, message.actor_name,
                                  f"no actor named {message.actor_name!r} on this worker",
                                  self._payload(json.dumps(message.asdict(), default=str)), time.time())

    def after_message_rejected(self, broker: Any, queue_name: str, redis_id: str | None, data: bytes,
                               reason: str) -> None:
        text = data.decode("utf-8", "replace")
        message_id = actor_name = None
        try:
            decoded = json.loads(text)
            message_id, actor_name = decoded.get("message_id"), decoded.get("actor_name")
        except Exception:
            pass
        recorder = self.ledger.recorder
        self.ledger.record(Rejected(q_name(queue_name), _fits(redis_id, MAX_ID_CHARS), _fits(message_id, MAX_ID_CHARS),
                                    _fits(actor_name, MAX_NAME_CHARS), recorder.text(reason), self._payload(data),
                                    time.time()))

    def _payload(self, raw: bytes | str) -> str:
        """A rejected message as stored: redacted field by field, and every positional
        argument masked (the actor is unknown or its signature did not match, so a
        positional secret cannot be recognised by name)."""
        recorder = self.ledger.recorder
        return recorder.text(recorder.redactor.payload(raw, None))

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self.ledger.start_background()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # After the worker threads have stopped: the final drain takes the transitions of
        # jobs that finished during the shutdown.
        self.ledger.stop_background()


def _fits(value: Any, limit: int) -> str | None:
    """``value`` if it can go into its identity column as it is (a string of at most
    ``limit`` printable characters), else None: a garbage id must not make the record of
    its rejection unwritable (the payload column keeps it, redacted)."""
    return value if identifier(limit)(value) is None else None
