"""Operator actions on runs and dead letters, each recorded with who did it and when.

``jobctl`` and the console call these same functions, so an action taken in either
leaves the same audit row (``operator_actions``) and obeys the same rules:

* a retry re-sends a finished ERROR, EXPIRED or REVOKED run as a new run linked to it
  (``retry_of``); a second retry of the same run is refused unless forced;
* requeueing a dead letter replaces it with a new, linked run in one Redis script call
  (never "send, then delete": a crash between the two would run it twice or lose it);
* discarding deletes a dead letter, keeping its audit record.
"""

from __future__ import annotations

import json
from typing import Any

from dramatiq import Message
from sqlalchemy import Engine

from jobcore.broker import PlatformRedisBroker
from jobcore.errors import LedgerError, RunNotFound
from jobcore.redaction import MASK, get_redactor
from ledger import queries
from ledger.reader import get_run, retries_of
from ledger.recorder import positional_names

RETRYABLE = ("ERROR", "EXPIRED", "REVOKED")
_DROPPED_OPTIONS = ("redis_message_id", "ledger_tracked", "retries", "eta", "due_at_ms", "reconciled")


class ActionRefused(LedgerError):
    """The action is not allowed for this run or message (the message says why)."""


def record_action(control: Engine, action: str, *, operator: str, message_id: str | None, run_id: int | None,
                  detail: dict[str, Any]) -> int:
    """Add an ``operator_actions`` row; returns its id."""
    with control.begin() as conn:
        return int(conn.execute(queries.RECORD_OPERATOR_ACTION, {
            "action": action, "message_id": message_id, "run_id": run_id, "operator": operator,
            "detail": json.dumps(detail, default=str)}).scalar_one())


def retry_run(broker: PlatformRedisBroker, control: Engine, ref: str | int, *, operator: str,
              force: bool = False) -> Message[Any]:
    """Re-send a finished ERROR/EXPIRED/REVOKED run as a new run linked to it."""
    run = get_run(control, ref)
    if run["status"] != "FINISHED" or run["resolution"] not in RETRYABLE:
        raise ActionRefused(f"run {run['id']} is {run['status']}/{run['resolution']}; only finished ERROR, "
                            "EXPIRED or REVOKED runs can be retried")
    earlier = retries_of(control, run["id"])
    if earlier and not force:
        ids = ", ".join(str(r["id"]) for r in earlier)
        raise ActionRefused(f"run {run['id']} was already retried (run {ids}); use --force to retry it again")
    if MASK in json.dumps([run["args"], run["kwargs"]]):
        raise ActionRefused(f"run {run['id']} had secret arguments, which the ledger does not keep; send it again "
                            "from the application")
    actor = broker.get_actor(run["actor_name"])
    message = actor.send_with_options(args=tuple(run["args"]), kwargs=dict(run["kwargs"]),
                                      job_context=run["context"] or None, retry_of=run["id"])
    record_action(control, "retry", operator=operator, message_id=run["message_id"], run_id=run["id"],
                  detail={"new_message_id": message.message_id, "forced": bool(earlier)})
    return message


def dead_letters(broker: PlatformRedisBroker, queue_name: str, *, limit: int = 1000) -> list[dict[str, Any]]:
    """The dead-lettered messages of a queue, newest first, arguments redacted."""
    client, keys = broker.client, broker.keys
    found: Any = client.zrevrange(keys.dead(queue_name), 0, limit - 1)
    ids = [i.decode() for i in found]
    payloads = client.hmget(keys.dead_messages(queue_name), ids) if ids else []
    redactor = get_redactor()
    rows = []
    for rid, raw in zip(ids, payloads, strict=True):
        try:
            data = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            data = {}
        if not isinstance(data, dict):
            data = {}  # JSON, but not a message: listed as undecodable
        actor = broker.actors.get(str(data.get("actor_name"))) if isinstance(data, dict) else None
        # An unknown actor's positional secrets cannot be recognised: all are masked.
        names = positional_names(actor.fn) if actor is not None else None
        raw_args, raw_kwargs = (data.get("args"), data.get("kwargs")) if isinstance(data, dict) else ([], {})
        try:
            args = redactor.positional(raw_args, names) if isinstance(raw_args, list) else [MASK]
            kwargs = redactor.value(raw_kwargs) if isinstance(raw_kwargs, dict) else MASK
        except RecursionError:  # nested deeper than redaction follows: listed, masked
            args, kwargs = [MASK], MASK
        rows.append({"redis_id": rid, "message_id": data.get("message_id"), "actor": data.get("actor_name"),
                     "args": args, "kwargs": kwargs, "undecodable": not data})
    return rows


def _dead_payload(broker: PlatformRedisBroker, queue_name: str, ref: str) -> tuple[str, bytes]:
    """The redis id and payload of the dead letter ``ref`` (redis id or message id)."""
    for row in dead_letters(broker, queue_name, limit=100_000):
        if ref in (row["redis_id"], row["message_id"]):
            raw: Any = broker.client.hget(broker.keys.dead_messages(queue_name), row["redis_id"])
            if raw is None:
                break
            return str(row["redis_id"]), bytes(raw)
    raise RunNotFound(f"no dead letter {ref} on queue {queue_name}")


def requeue_dead_letter(broker: PlatformRedisBroker, control: Engine, queue_name: str, ref: str, *,
                        operator: str) -> Message[Any]:
    """Replace a dead letter with a new run linked to the old one, atomically."""
    redis_id, raw = _dead_payload(broker, queue_name, ref)
    try:
        old = Message.decode(raw)
    except Exception:
        raise ActionRefused(f"dead letter {redis_id} cannot be decoded: see rejected_messages; discard it") from None
    options = {k: v for k, v in old.options.items() if k not in _DROPPED_OPTIONS}
    with control.connect() as conn:
        options["retry_of"] = conn.execute(queries.RUN_ID_OF, {"m": old.message_id}).scalar()
    new = broker.requeue_dead(queue_name, redis_id, Message(queue_name=queue_name, actor_name=old.actor_name,
                                                            args=old.args, kwargs=old.kwargs, options=options))
    if new is None:
        raise ActionRefused(f"dead letter {redis_id} was requeued or discarded by someone else meanwhile")
    record_action(control, "requeue", operator=operator, message_id=old.message_id, run_id=options["retry_of"],
                  detail={"queue": queue_name, "redis_id": redis_id, "new_message_id": new.message_id})
    return new


def discard_dead_letter(broker: PlatformRedisBroker, control: Engine, queue_name: str, ref: str, *,
                        operator: str) -> None:
    """Delete a dead letter (its audit record stays)."""
    redis_id, raw = _dead_payload(broker, queue_name, ref)
    try:
        message_id = json.loads(raw).get("message_id")
    except Exception:
        message_id = None
    if not broker.discard_dead(queue_name, redis_id):
        raise ActionRefused(f"dead letter {redis_id} was requeued or discarded by someone else meanwhile")
    record_action(control, "discard", operator=operator, message_id=message_id, run_id=None,
                  detail={"queue": queue_name, "redis_id": redis_id})
