"""The JobRun ledger: every message's life as one row in ``job_runs``.

* ``before_enqueue``: PENDING is written (and committed) *before* the message reaches
  Redis, so no worker can start a run the ledger does not know. Retries and delay-queue
  hops carry ``ledger_tracked`` and write nothing.
* ``before_process_message``: STARTED, ``attempts + 1``. A delivery of a run that is
  already FINISHED (revoked while queued, or redelivered after it completed) is skipped.
* ``after_process_message``: COMPLETED with its result, or one ``job_errors`` row per
  failed attempt and ERROR after the final one (the retry policy decides which).
* ``after_skip_message``: EXPIRED / REVOKED / REJECTED, never STARTED.
* Messages for unknown actors and undecodable messages are recorded (rejected_messages)
  and the run, if it has a row, is closed as ERROR.

``LEDGER_MODE=redis`` (see :mod:`jobcore.settings`) writes the same transitions to the
Redis ledger buffer atomically with the broker operation each belongs to, instead of
waiting for PostgreSQL; the spool flusher applies them in batches.

It must sit *after* validation, context and expiry in the stack (their ``before_``
hooks run first) and *before* the retry policy (whose ``after_`` hook then runs first).
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from dramatiq import Middleware
from dramatiq.common import q_name
from dramatiq.errors import ActorNotFound

from jobcore.context import OPTION
from jobcore.errors import AlreadyFinished, JobRevoked
from jobcore.fastscript import FastScript
from jobcore.ledger import (
    START_SCRIPT,
    LedgerStore,
    LedgerWriter,
    Params,
    SpoolFlusher,
    attempts_key,
    event_json,
    fingerprint,
    identity_params,
    iso,
    register_process_store,
    spool_key,
    started_event_parts,
    stash_enqueue_event,
    to_json,
    utcnow,
)
from jobcore.message_state import state
from jobcore.redaction import Redactor, get_redactor
from jobcore.revocation import revoked_key
from jobcore.settings import get_settings

log = logging.getLogger(__name__)

MAX_TRACEBACK = 20_000
MAX_PAYLOAD = 10_000


class Ledger(Middleware):
    """Records PENDING → STARTED → FINISHED for every message (see module docstring)."""

    def __init__(self, *, redactor: Redactor | None = None) -> None:
        self._redactor = redactor
        self._store: LedgerStore | None = None
        self._writer: LedgerWriter | None = None
        self._store_pid: int | None = None
        self._broker: Any = None
        self._flusher: SpoolFlusher | None = None
        self._start_script: FastScript | None = None
        register_process_store(self.store)

    @property
    def actor_options(self) -> set[str]:
        # store_result=False keeps large or sensitive return values out of the ledger.
        return {"store_result"}

    @property
    def redactor(self) -> Redactor:
        return self._redactor or get_redactor()

    def store(self) -> LedgerStore:
        """This process's store (engines and pools are never shared across fork)."""
        pid = os.getpid()
        if self._store is None or self._store_pid != pid:
            broker = self._broker
            client = broker.client if broker is not None else None
            namespace = broker.namespace if broker is not None else "dramatiq"
            settings = get_settings()
            mode = settings.ledger_mode if hasattr(broker, "take_ledger_event") else "sync"
            self._store = LedgerStore(settings.database_url, client, spool_key(namespace), mode=mode)
            self._writer = LedgerWriter(self._store)
            self._store_pid = pid
        return self._store

    @property
    def buffered(self) -> bool:
        """True in redis mode (transitions go to the Redis buffer)."""
        return self.store().mode == "redis"

    def writer(self) -> LedgerWriter:
        """This process's batching writer for worker-side transitions."""
        self.store()
        assert self._writer is not None
        return self._writer

    def after_process_boot(self, broker: Any) -> None:
        self._broker = broker

    def before_declare_actor(self, broker: Any, actor: Any) -> None:
        self._broker = broker

    # -- row identity -------------------------------------------------------------------
    def _cached_identity(self, broker: Any, message: Any) -> Params:
        """The identity of a message being processed, computed once per delivery."""
        st = state(message)
        if st.identity is None:
            st.identity = self._identity(broker, message)
        return dict(st.identity)

    def _identity(self, broker: Any, message: Any) -> Params:
        actor = broker.actors.get(message.actor_name)
        args, kwargs = self.redactor.arguments(actor.fn if actor else None, message.args, message.kwargs)
        ctx = message.options.get(OPTION) or {}
        tenant = ctx.get("tenant_id") if isinstance(ctx, dict) else None
        return identity_params(
            message_id=message.message_id,
            actor_name=message.actor_name,
            queue_name=q_name(message.queue_name),
            tenant_id=int(tenant) if tenant is not None else None,
            args=args,
            kwargs=kwargs,
            context=self.redactor.value(ctx) if isinstance(ctx, dict) else {},
            enqueued_at=datetime.fromtimestamp(message.message_timestamp / 1000, UTC),
        )

    def _light_identity(self, message: Any) -> Params:
        """The columns a buffered STARTED/FINISHED needs to create a row whose PENDING was
        lost (no arguments: computing their redaction on every delivery costs too much)."""
        ctx = message.options.get(OPTION) or {}
        tenant = ctx.get("tenant_id") if isinstance(ctx, dict) else None
        return {
            "message_id": message.message_id,
            "actor_name": message.actor_name,
            "queue_name": q_name(message.queue_name),
            "tenant_id": int(tenant) if tenant is not None else None,
            "enqueued_at": iso(datetime.fromtimestamp(message.message_timestamp / 1000, UTC)),
        }

    def _error_params(self, exception: BaseException, attempt: int, will_retry: bool) -> Params:
        tb = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        tb = pg_text(self.redactor.text(tb)[-MAX_TRACEBACK:], MAX_TRACEBACK)
        etype = f"{type(exception).__module__}.{type(exception).__qualname__}"
        return {
            "attempt": attempt,
            "exception_type": etype,
            "error_message": pg_text(self.redactor.text(str(exception)), MAX_PAYLOAD),
            "traceback": tb,
            "fingerprint": fingerprint(etype, tb),
            "will_retry": will_retry,
        }

    # -- enqueue ------------------------------------------------------------------------
    def prepare_pending(self, broker: Any, message: Any) -> Params | None:
        """Mark a new message as tracked and return its PENDING row (None for a retry or
        a delay-queue hop, which already have one)."""
        if message.options.get("ledger_tracked"):
            return None
        message.options["ledger_tracked"] = 1
        params = self._identity(broker, message)
        params.update(at=iso(utcnow()), retry_of=message.options.get("retry_of"))
        return params

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        params = self.prepare_pending(broker, message)
        if params is None:
            return
        if self.buffered:
            # Written by the broker in the same script call as the message: both or neither.
            stash_enqueue_event(message.options["redis_message_id"], event_json("pending", params))
        else:
            self.store().apply("pending", params)

    def after_enqueue_failed(self, broker: Any, message: Any, exc: BaseException) -> None:
        if self.buffered:
            return  # the PENDING event failed with the message: nothing was recorded
        params = {"message_id": message.message_id, "at": iso(utcnow()), "resolution": "ERROR"}
        params.update(self._error_params(exc, 0, False))
        self.store().apply("enqueue_failed", params)

    # -- processing ---------------------------------------------------------------------
    def before_process_message(self, broker: Any, message: Any) -> None:
        if self.buffered:
            self._start_buffered(broker, message)
            return
        st = state(message)
        params = {"message_id": message.message_id, "at": iso(utcnow()), "worker_id": broker.broker_id}
        applied, row = self.writer().submit("started", params, lambda: self._cached_identity(broker, message))
        if applied and row is None:
            st.skip_reason = "DUPLICATE"
            log.info("Skipping %s (%s): its run is already finished", message.message_id, message.actor_name)
            raise AlreadyFinished("run already finished")
        st.attempt = int(row[0]) if row else int(message.options.get("retries", 0)) + 1

    def _start_buffered(self, broker: Any, message: Any) -> None:
        """STARTED in redis mode: one script checks that the run was not revoked or
        finished by another delivery, counts the attempt and appends the event. (Sharing
        one call among threads starting together was tried: 2.5 starts per call, but the
        hand-offs between threads made 1 ms jobs ~12% slower.)"""
        st = state(message)
        now = iso(utcnow())
        st.light_identity = self._light_identity(message)
        params = {**st.light_identity, "at": now, "worker_id": broker.broker_id}
        prefix, suffix = started_event_parts(params)
        floor = int(message.options.get("retries", 0)) + 1
        if self._start_script is None:
            self._start_script = FastScript(broker.client, START_SCRIPT)
        ns = broker.namespace
        n = int(self._start_script(keys=[ns, revoked_key(ns), attempts_key(ns), spool_key(ns)], args=[
            q_name(message.queue_name), message.options.get("redis_message_id", ""), message.message_id,
            prefix, suffix, floor])[0])
        if n < 0:
            st.skip_reason = "REVOKED" if n == -2 else "DUPLICATE"
            log.info("Skipping %s (%s): its run is %s", message.message_id, message.actor_name,
                     "revoked" if n == -2 else "already finished")
            raise AlreadyFinished("run revoked" if n == -2 else "run already finished")
        st.attempt = n
        st.started_at = now

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        st = state(message)
        now = utcnow()
        if exception is None or isinstance(exception, JobRevoked):
            if exception is not None:
                resolution, payload = "REVOKED", "null"
            else:
                actor = broker.actors.get(message.actor_name)
                keep = actor is None or actor.options.get("store_result", True)
                resolution = "COMPLETED"
                payload = to_json(self.redactor.value(_jsonable(result))) if keep and result is not None else "null"
            params = {"message_id": message.message_id, "at": iso(now), "resolution": resolution,
                      "attempts": st.attempt or 1, "result": payload}
            if self.buffered:
                # Appended by the consumer in the same script call as the ack (both or neither).
                params.update(st.light_identity or self._light_identity(message), started_at=st.started_at,
                              worker_id=broker.broker_id)
                st.finish_event = event_json("finished", params)
                return
            # The job thread moves on; the ack waits for this write (before_ack).
            st.pending_write = self.writer().submit_nowait(
                "finished", params, lambda: self._cached_identity(broker, message))
            return
        params = self._cached_identity(broker, message)
        params.update(at=iso(now), attempts=st.attempt or 1)
        params.update(self._error_params(exception, st.attempt or 1, st.will_retry))
        if st.will_retry:
            params["retry_at"] = iso(now + timedelta(milliseconds=st.retry_delay_ms or 0))
            self.store().record("retry_wait", params)
        else:
            params.update(resolution="ERROR", result="null")
            self.store().record("final_error", params)
            if self.buffered:
                broker.client.hdel(attempts_key(broker.namespace), message.message_id)

    def before_ack(self, broker: Any, message: Any) -> None:
        """Never ack a message before its FINISHED transition is committed or spooled: a
        crash before that point redelivers the message instead of losing the transition."""
        op = state(message).pending_write
        if op is None:
            return
        op.done.wait()
        if op.error is not None:
            log.critical("FINISHED of %s could not be recorded: %s", message.message_id, op.error)

    before_nack = before_ack

    def after_skip_message(self, broker: Any, message: Any) -> None:
        st = state(message)
        if st.skip_reason == "DUPLICATE":
            return
        params = self._cached_identity(broker, message)
        params.update(at=iso(utcnow()), attempts=0, result="null")
        if st.skip_reason in ("EXPIRED", "REVOKED"):
            params["resolution"] = st.skip_reason
            self.store().record("finished", params)
            return
        # REJECTED, or a skip by middleware that did not say why: the run can never
        # complete, so close it visibly rather than leave it PENDING forever.
        detail = st.skip_detail or "skipped by middleware"
        params.update(resolution="ERROR", attempt=0, exception_type="jobcore.errors.Rejected",
                      error_message=self.redactor.text(detail), traceback="",
                      fingerprint=fingerprint("Rejected", detail), will_retry=False)
        self.store().record("final_error", params)

    # -- messages that never reach an actor ---------------------------------------------
    def after_nack(self, broker: Any, message: Any) -> None:
        exc = getattr(message, "_exception", None)
        if not isinstance(exc, ActorNotFound):
            return
        reason = f"no actor named {message.actor_name!r} on this worker"
        self._record_rejected(q_name(message.queue_name), message.options.get("redis_message_id"),
                              message.message_id, message.actor_name, reason,
                              json.dumps(message.asdict(), default=str))

    def after_message_rejected(self, broker: Any, queue_name: str, redis_id: str | None,
                               data: bytes, reason: str) -> None:
        text = data.decode("utf-8", "replace")
        message_id = actor_name = None
        try:
            decoded = json.loads(text)
            message_id, actor_name = decoded.get("message_id"), decoded.get("actor_name")
        except Exception:
            pass
        self._record_rejected(q_name(queue_name), redis_id, message_id, actor_name, reason, text)

    def _record_rejected(self, queue_name: str, redis_id: str | None, message_id: str | None,
                         actor_name: str | None, reason: str, payload: str) -> None:
        self.store().apply("rejected", {
            "queue_name": queue_name, "redis_message_id": redis_id, "message_id": message_id,
            "actor_name": actor_name, "reason": pg_text(reason, MAX_PAYLOAD),
            "payload": pg_text(self.redactor.text(payload), MAX_PAYLOAD),
            "at": iso(utcnow()), "resolution": "ERROR",
        })

    # -- spool ---------------------------------------------------------------------------
    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._broker = broker
        store = self.store()
        # redis mode: the buffer is drained every LEDGER_FLUSH_MS; sync mode: the spool
        # only fills while PostgreSQL is unreachable, once a second is enough.
        interval = get_settings().ledger_flush_ms / 1000 if store.mode == "redis" else 1.0
        self._flusher = SpoolFlusher(store, interval=interval)
        self._flusher.start()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # After the worker threads have stopped: jobs that finished during the shutdown
        # have their transitions in the buffer (redis mode) and the final drain takes them.
        if self._writer is not None and self._writer.batches:
            log.info("Ledger writer: %d transitions in %d batches (%.1f per round trip)",
                     self._writer.ops, self._writer.batches, self._writer.ops / self._writer.batches)
        if self._flusher is not None:
            self._flusher.stop()


def pg_text(value: str, limit: int) -> str:
    """Text PostgreSQL accepts: no NUL characters (they come with binary garbage), bounded."""
    return value.replace("\x00", "\\x00")[:limit]


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
