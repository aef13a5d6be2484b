"""Periodic actors without periodiq's silent skip.

periodiq's ``PeriodiqMiddleware(skip_delay=30)`` acks and drops a periodic message that
is delivered more than 30 s after its tick; redelivery after a worker crash always takes
longer than that, so the day's DR approval would silently not happen. Here a late
periodic message runs, once (the tick was claimed once, and the ledger never runs a
finished message twice); its lateness is logged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from dramatiq import Middleware

log = logging.getLogger(__name__)


class PeriodicMiddleware(Middleware):
    """Declares the ``periodic`` actor option; logs late ticks, never skips them."""

    @property
    def actor_options(self) -> set[str]:
        return {"periodic"}

    def before_process_message(self, broker: Any, message: Any) -> None:
        scheduled = message.options.get("scheduled_at")
        if not scheduled:
            return
        try:
            tick = datetime.fromisoformat(scheduled)
            # The scheduler writes UTC with an offset; a naive time from another producer is
            # read as UTC rather than failing the job over a log line.
            late = (datetime.now(UTC) - (tick if tick.tzinfo else tick.replace(tzinfo=UTC))).total_seconds()
        except (TypeError, ValueError):
            return
        if late > 30:
            log.warning("Running %s for its tick %s, %.0f s late", message.actor_name, scheduled, late)
