"""Bulk enqueue for fan-outs: thousands of messages with every PENDING row durable first.

``send()`` costs one ledger INSERT and one Redis round trip per message; a fan-out
over every tenant (or a backfill) instead writes all PENDING rows in one multi-row
INSERT, commits, and only then enqueues every message in pipelined Redis round trips.
The PENDING-first rule holds for the whole batch: no message is visible before its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from dramatiq import Message

from jobcore.errors import UnserializableArguments


def enqueue_many(broker: Any, messages: Sequence[Message[Any]]) -> list[Message[Any]]:
    """Validate, record and enqueue ``messages`` (no delay); returns the enqueued copies.

    Every middleware's ``before_enqueue`` runs as for ``send()`` (validation errors raise
    before anything is written), except the ledger's, which is batched, and validation's
    trial encoding: each message is encoded once, before any row is written.
    """
    prepared: list[Message[Any]] = []
    encoded: list[tuple[str, str, bytes]] = []
    rows: list[dict[str, Any]] = []
    ledger = None
    for message in messages:
        message = message.copy(options={"redis_message_id": str(uuid4())})
        for middleware in broker.middleware:
            prepare = getattr(middleware, "prepare_pending", None)
            validate = getattr(middleware, "validate_message", None)
            if prepare is not None:
                ledger = middleware
                row = prepare(broker, message)
                if row is not None:
                    rows.append(row)
            elif validate is not None:
                validate(broker, message)
            else:
                middleware.before_enqueue(broker, message, None)
        try:
            data = message.encode()  # once; a failure here leaves nothing written
        except Exception as exc:
            raise UnserializableArguments(
                f"arguments of {message.actor_name} cannot be serialised to JSON: {exc}") from None
        prepared.append(message)
        encoded.append((message.queue_name, message.options["redis_message_id"], data))
    if ledger is not None:
        ledger.store().pending_many(rows)
    broker.enqueue_encoded_many(encoded)
    for message in prepared:
        broker.emit_after("enqueue", message, None)
    return prepared
