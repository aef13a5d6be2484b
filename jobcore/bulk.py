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


def enqueue_many(broker: Any, messages: Sequence[Message[Any]]) -> list[Message[Any]]:
    """Validate, record and enqueue ``messages`` (no delay); returns the enqueued copies.

    Every middleware's ``before_enqueue`` runs as for ``send()`` (validation errors raise
    before anything is written), except the ledger's, which is batched.
    """
    prepared: list[Message[Any]] = []
    rows: list[dict[str, Any]] = []
    ledger = None
    for message in messages:
        message = message.copy(options={"redis_message_id": str(uuid4())})
        for middleware in broker.middleware:
            prepare = getattr(middleware, "prepare_pending", None)
            if prepare is not None:
                ledger = middleware
                row = prepare(broker, message)
                if row is not None:
                    rows.append(row)
            else:
                middleware.before_enqueue(broker, message, None)
        prepared.append(message)
    if ledger is not None:
        ledger.store().pending_many(rows)
    broker.enqueue_encoded_many([(m.queue_name, m.options["redis_message_id"], m.encode()) for m in prepared])
    for message in prepared:
        broker.emit_after("enqueue", message, None)
    return prepared
