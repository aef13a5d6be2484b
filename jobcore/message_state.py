"""Per-delivery state that middleware share about one message while a worker handles it.

It lives on the MessageProxy object (not in ``message.options``), so nothing of it is
encoded into a retried message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_ATTR = "_platform_state"


@dataclass
class DeliveryState:
    """What the middleware decided about this delivery."""

    attempt: int | None = None          # ledger attempt number (1-based), None if unknown
    will_retry: bool = False            # set by the retry policy on failure
    retry_delay_ms: int | None = None
    outcome_unknown: bool = False       # a side effect may have happened (time limit on money actor)
    skip_reason: str | None = None      # EXPIRED | REVOKED | REJECTED | DUPLICATE
    skip_detail: str = ""
    context_tokens: Any = None
    identity: dict[str, Any] | None = None  # the ledger row identity, computed once
    pending_write: Any = None               # a FINISHED write the ack must wait for
    started_at: str | None = None           # redis mode: when this attempt started (ISO)
    light_identity: dict[str, Any] | None = None  # redis mode: row columns buffered events carry
    finish_event: str | None = None         # redis mode: the FINISHED event the ack appends


def state(message: Any) -> DeliveryState:
    """The delivery state of ``message`` (created on first use)."""
    st = getattr(message, _ATTR, None)
    if st is None:
        st = DeliveryState()
        setattr(message, _ATTR, st)
    return st
