"""dramatiq's StubBroker with the in-memory ledger: the fast in-process test layer.

:class:`LedgerStubBroker` makes the same ledger calls as the platform broker does
(PENDING with the enqueue, the closing event with the ack or nack), applying them to a
:class:`~ledger.memory.MemoryLedger`, so every middleware can be tested without Redis or
PostgreSQL, through the same codec and the same transition rules.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker, _StubConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import QueueNotFound
from dramatiq.middleware import CurrentMessage

from jobcore.keys import Keys
from jobcore.redaction import Redactor
from ledger.memory import MemoryLedger
from ledger.recorder import Recorder
from middleware.expiry import Expiry
from middleware.job_context import JobContextMiddleware
from middleware.ledger import Ledger
from middleware.retries import RetryPolicy
from middleware.validation import Validation


class _LedgerConsumer(_StubConsumer):
    def __init__(self, broker: LedgerStubBroker, *args: Any) -> None:
        super().__init__(*args)
        self.ledger = broker.ledger

    def _close(self, message: Any) -> None:
        closing = self.ledger.closing(message)
        if closing is not None:
            self.ledger.apply_raw(closing.raw)

    def ack(self, message: Any) -> None:
        self._close(message)
        super().ack(message)

    def nack(self, message: Any) -> None:
        self._close(message)
        super().nack(message)


class LedgerStubBroker(StubBroker):
    """A StubBroker whose operations carry ledger events into a MemoryLedger."""

    def __init__(self, middleware: list[Any] | None = None, ledger: MemoryLedger | None = None) -> None:
        super().__init__(middleware=middleware)
        self.ledger = ledger or MemoryLedger(Recorder(lambda: REDACTOR))
        self.keys = Keys("stub")
        self.broker_id = "stub-worker"

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        queue_name = message.queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            due = current_millis() + delay
            message = message.copy(queue_name=queue_name, options={"eta": due, "due_at_ms": due})
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        self.emit_before("enqueue", message, delay)
        new_run = not message.options.get("ledger_tracked")
        if new_run:
            message.options["ledger_tracked"] = 1
        data = message.encode()
        if new_run:
            actor = self.actors.get(message.actor_name)
            self.ledger.apply_raw(self.ledger.pending_event(actor.fn if actor else None, message))
        self.queues[queue_name].put(data)
        self.emit_after("enqueue", message, delay)
        return message

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 100) -> Any:
        try:
            return _LedgerConsumer(self, self.queues[queue_name], self.dead_letters_by_queue[queue_name], prefetch,
                                   timeout)
        except KeyError:
            raise QueueNotFound(queue_name) from None


REDACTOR = Redactor(("password", "token", "secret", "api_key"))


def make_broker(**retry: int) -> LedgerStubBroker:
    """A fresh stub broker with the platform's service-free middleware, in the platform's
    order, and a memory ledger; set as dramatiq's broker (actors and ``report_progress``
    find it there)."""
    ledger = MemoryLedger(Recorder(lambda: REDACTOR))
    policy = {"max_retries": 2, "min_backoff": 10, "max_backoff": 20, **retry}
    stack = [Validation(), JobContextMiddleware(), Expiry(max_age=None), CurrentMessage(), Ledger(ledger),
             RetryPolicy(**policy)]
    broker = LedgerStubBroker(middleware=stack, ledger=ledger)
    dramatiq.set_broker(broker)
    return broker
