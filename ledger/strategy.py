"""The ledger's write strategy: the interface the broker and the middleware write through.

A strategy is chosen once, by the composition root (:mod:`jobplatform`), and injected
into the broker and the ledger middleware. The broker carries the events that must be
atomic with its own operations (PENDING with the enqueue, the closing event with the
ack or nack); the middleware asks whether a delivery may start and records the rest.

* :class:`ledger.buffered.RedisStreamLedger` is the platform's strategy: events ride in
  Redis scripts and are drained to PostgreSQL in batches.
* :class:`ledger.memory.MemoryLedger` keeps rows in memory, for in-process tests with
  dramatiq's StubBroker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from jobcore.errors import LedgerError
from jobcore.message_state import state
from ledger.events import Event
from ledger.recorder import Recorder


@dataclass(frozen=True)
class Closing:
    """The event that ends a delivery, for the broker to carry with the ack/nack."""

    raw: bytes
    final: bool  # the run is FINISHED: later deliveries of it are refused
    started_entry: bytes | None = None  # the delivery's STARTED stream entry (dropped if still there)


@dataclass(frozen=True)
class StartVerdict:
    """May this delivery run? ``attempt`` is its number when it may."""

    run: bool
    attempt: int = 0
    reason: str | None = None  # REVOKED | DUPLICATE when it may not
    entry: bytes | None = None  # where STARTED was written (buffered strategy)


class LedgerStrategy(Protocol):
    """How transitions reach the ledger (see the module docstring)."""

    recorder: Recorder

    def pending_event(self, fn: Any, message: Any) -> bytes:
        """The encoded PENDING event of a new run's message (``fn`` is its actor's
        function, for redaction by parameter name); raises an
        :class:`~jobcore.errors.EnqueueError` for arguments the ledger cannot store."""

    def start(self, message: Any, worker_id: str) -> StartVerdict:
        """Decide whether a delivery may start and record STARTED if so."""

    def closing(self, message: Any) -> Closing | None:
        """The event that closes this delivery (set by the ledger middleware), if any."""

    def record(self, event: Event) -> None:
        """Record an event that belongs to no broker operation (progress, rejections)."""

    def sync(self, timeout_s: float = 30.0) -> None:
        """Return once everything recorded so far is in the ledger's tables; raises
        :class:`~ledger.drainer.LedgerLagging` if that cannot be done in time."""

    def accepting(self) -> bool:
        """False while the ledger is too far behind for workers to take more work."""

    def start_background(self) -> None:
        """Start the strategy's background work in a worker process."""

    def stop_background(self) -> None:
        """Stop it, flushing what can be flushed."""


def closing_event(message: Any) -> Event | None:
    """The closing event the ledger middleware left on ``message``'s delivery state."""
    closing: Event | None = state(message).closing
    return closing


def ledger_of(broker: Any) -> LedgerStrategy:
    """The ledger strategy a broker was built with (see :mod:`jobplatform`)."""
    ledger: LedgerStrategy | None = getattr(broker, "ledger", None)
    if ledger is None:
        raise LedgerError(f"{type(broker).__name__} has no ledger: build the broker with jobplatform")
    return ledger
