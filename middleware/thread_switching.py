"""How often a worker process's threads hand the GIL to each other.

A job thread that comes back from a Redis round trip (the STARTED script, the ack) or a
sleep needs the GIL again; if another thread is running Python code, CPython makes it wait
until that thread gives the GIL up, at the latest after ``sys.getswitchinterval()`` (5 ms by
default). With 8 job threads, a consumer thread and the ledger flusher in one process,
those waits add up to milliseconds per job. A shorter interval (``WORKER_SWITCH_INTERVAL_US``)
bounds them; it is set in worker processes only, never in producers that import the app.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from dramatiq import Middleware

log = logging.getLogger(__name__)


class ThreadSwitching(Middleware):
    """Sets the interpreter's thread switch interval when a worker process boots."""

    def __init__(self, *, interval_us: int) -> None:
        self.interval_us = interval_us

    @property
    def actor_options(self) -> set[str]:
        return set()

    def after_process_boot(self, broker: Any) -> None:
        if self.interval_us > 0:
            sys.setswitchinterval(self.interval_us / 1_000_000)
            log.debug("Thread switch interval set to %d µs", self.interval_us)
