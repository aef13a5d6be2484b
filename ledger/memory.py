"""An in-memory ledger strategy for in-process tests (dramatiq's StubBroker).

Rows follow exactly the rules of :mod:`ledger.model`; events go through the same codec
as in production. A broker that uses it calls :meth:`MemoryLedger.apply_raw` with the
events the platform broker would carry in its scripts (see ``tests/support/stub.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ledger import model
from ledger.events import Event, Finished, Rejected, Started, decode, encode, message_id_of
from ledger.recorder import Recorder
from ledger.strategy import Closing, StartVerdict, closing_event


class MemoryLedger:
    """Ledger rows in a dict, keyed by message id."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.rows: dict[str, model.Row] = {}
        self.rejected: list[Rejected] = []
        self.events: list[Event] = []
        self.revoked: set[str] = set()
        self._finished: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def apply(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            mid = message_id_of(event)
            if isinstance(event, Rejected):
                self.rejected.append(event)
            if mid is None:
                return
            row = model.apply(self.rows.get(mid), event)
            if row is not None:
                self.rows[mid] = row
            if isinstance(event, (Finished, Rejected)):
                self._finished.add(mid)

    def apply_raw(self, raw: bytes | None) -> None:
        if raw is not None:
            self.apply(decode(raw))

    # -- the strategy interface ----------------------------------------------------------
    def pending_event(self, fn: Any, message: Any) -> bytes:
        return encode(self.recorder.pending(fn, message))

    def closing(self, message: Any) -> Closing | None:
        event = closing_event(message)
        if event is None:
            return None
        return Closing(encode(event), isinstance(event, (Finished, Rejected)))

    def start(self, message: Any, worker_id: str) -> StartVerdict:
        mid = message.message_id
        with self._lock:
            if mid in self.revoked:
                return StartVerdict(False, reason="REVOKED")
            if mid in self._finished:
                return StartVerdict(False, reason="DUPLICATE")
            n = max(self._attempts.get(mid, 0) + 1, int(message.options.get("retries", 0)) + 1)
            self._attempts[mid] = n
        self.apply(Started(self.recorder.run_ref(message), time.time(), worker_id, n))
        return StartVerdict(True, attempt=n)

    def record(self, event: Event) -> None:
        self.apply(event)

    def sync(self, timeout_s: float = 30.0) -> None:
        return None

    def accepting(self) -> bool:
        return True

    def start_background(self) -> None:
        return None

    def stop_background(self) -> None:
        return None
