"""Base for middleware that run periodic loops in each worker process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from dramatiq import Middleware

log = logging.getLogger(__name__)


class BackgroundLoops(Middleware):
    """Starts one daemon thread per loop in ``after_worker_boot`` and stops them in
    ``before_worker_shutdown``. A loop that raises is logged and runs again next period:
    these loops are the safety nets, so they must never die quietly."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    @property
    def actor_options(self) -> set[str]:
        return set()

    def loops(self, broker: Any, worker: Any) -> list[tuple[str, float, Callable[[], object]]]:
        """``(name, period in seconds, function)`` for each loop."""
        raise NotImplementedError

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._stop.clear()
        for name, period, fn in self.loops(broker, worker):
            threading.Thread(target=self._loop, args=(name, period, fn), name=name, daemon=True).start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()

    def _loop(self, name: str, period: float, fn: Callable[[], object]) -> None:
        while not self._stop.wait(period):
            try:
                fn()
            except Exception as exc:
                log.warning("%s failed: %s", name, exc)
