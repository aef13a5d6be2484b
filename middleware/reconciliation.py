"""Runs :func:`ledger.reconcile.reconcile` from every worker process every
``RECONCILE_INTERVAL_MS`` (a Redis lock lets one process at a time do the work)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from ledger.reconcile import reconcile
from ledger.strategy import LedgerStrategy
from middleware.background import BackgroundLoops


class Reconciliation(BackgroundLoops):
    """Background ledger–broker reconciliation in worker processes."""

    def __init__(self, ledger: LedgerStrategy, control: Callable[[], Engine], *, interval_ms: int,
                 grace_ms: int) -> None:
        super().__init__()
        self.ledger = ledger
        self.control = control
        self.interval_s = interval_ms / 1000
        self.grace_s = grace_ms / 1000

    def loops(self, broker: Any, worker: Any) -> list[tuple[str, float, Callable[[], object]]]:
        def run() -> None:
            reconcile(broker, self.ledger, self.control(), broker.keys, grace_s=self.grace_s)

        return [("reconciler", self.interval_s, run)]
