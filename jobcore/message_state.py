"""Per-delivery state that middleware share about one message while a worker handles it.

It lives on the MessageProxy object (not in ``message.options``), so nothing of it is
encoded into a retried message. Each field has one writer, named in its comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_ATTR = "_platform_state"


@dataclass
class DeliveryState:
    """What the middleware decided about this delivery."""

    attempt: int | None = None          # ledger: attempt number (1-based) once started
    started_at: float | None = None     # ledger: when this attempt started (Unix seconds)
    started_entry: bytes | None = None  # ledger: where the buffer holds this attempt's STARTED
    will_retry: bool = False            # retry policy: a failed attempt will be retried
    retry_delay_ms: int | None = None   # retry policy
    outcome_unknown: bool = False       # retry policy: a side effect may have happened
    skip_reason: str | None = None      # expiry, validation, ledger: EXPIRED | REVOKED | REJECTED | DUPLICATE
    #                                   | NOT_HELD (the consumer then leaves Redis alone)
    skip_detail: str = ""
    context_tokens: Any = None          # job context middleware
    revoked: bool = False               # revocation watcher: an operator revoked this running job
    closing: Any = None                 # ledger: the event the ack/nack carries (ledger.events.Event)


def state(message: Any) -> DeliveryState:
    """The delivery state of ``message`` (created on first use)."""
    st = getattr(message, _ATTR, None)
    if st is None:
        st = DeliveryState()
        setattr(message, _ATTR, st)
    return st
