"""Runs :func:`jobcore.reconcile.reconcile` from every worker process every
``RECONCILE_INTERVAL_MS`` (a Redis lock lets one process at a time do the work)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq import Middleware

from jobcore.reconcile import reconcile

log = logging.getLogger(__name__)


class Reconciliation(Middleware):
    """Background ledger–broker reconciliation in worker processes."""

    def __init__(self, *, interval_ms: int, grace_ms: int) -> None:
        self.interval_s = interval_ms / 1000
        self.grace_s = grace_ms / 1000
        self._stop = threading.Event()

    @property
    def actor_options(self) -> set[str]:
        return set()

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._stop.clear()
        threading.Thread(target=self._run, args=(broker,), name="reconciler", daemon=True).start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()

    def _run(self, broker: Any) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                reconcile(broker, grace_s=self.grace_s)
            except Exception as exc:
                log.warning("Reconciliation failed: %s", exc)
