"""Progress reporting from inside a running job (the seed's EXAMPLE_PROGRESS)."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from jobcore.errors import LedgerError
from ledger.events import Progress
from ledger.revocation import checkpoint
from ledger.strategy import ledger_of


def report_progress(value: float | dict[str, Any], *, message: str | None = None) -> None:
    """Record ``value`` (a fraction 0..1 or a JSON object) as the running job's progress,
    then act as a revocation checkpoint. Raises :class:`LedgerError` outside a job."""
    current = CurrentMessage.get_current_message()
    if current is None:
        raise LedgerError("report_progress() called outside a running job")
    payload: dict[str, Any] = value if isinstance(value, dict) else {"fraction": float(value)}
    if message is not None:
        payload = {**payload, "message": message}
    ledger = ledger_of(dramatiq.get_broker())
    ledger.record(Progress(current.message_id, time.time(), ledger.recorder.progress(payload)))
    checkpoint()
