"""Progress reporting from inside a running job (the seed's EXAMPLE_PROGRESS)."""

from __future__ import annotations

from typing import Any

from jobcore.context import current_message_id
from jobcore.errors import LedgerError
from jobcore.ledger import iso, process_store, to_json, utcnow
from jobcore.revocation import checkpoint


def report_progress(value: float | dict[str, Any], *, message: str | None = None) -> None:
    """Write ``value`` (a fraction 0..1 or a JSON object) onto the running job's run, then
    act as a revocation checkpoint. Raises :class:`LedgerError` outside a job."""
    message_id = current_message_id()
    if message_id is None:
        raise LedgerError("report_progress() called outside a running job")
    payload: dict[str, Any] = value if isinstance(value, dict) else {"fraction": float(value)}
    if message is not None:
        payload = {**payload, "message": message}
    # record(): in redis mode the progress goes through the buffer, after the run's STARTED.
    process_store().record("progress", {"message_id": message_id, "progress": to_json(payload),
                                        "at": iso(utcnow())})
    checkpoint()
