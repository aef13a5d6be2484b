"""Fail fast at worker start: one clear line naming the unreachable service's URL
(password masked), then exit, instead of a worker that boots and fails every job."""

from __future__ import annotations

import logging
import sys
from typing import Any

from dramatiq import Middleware

from jobcore.db import check_database
from jobcore.errors import ServiceUnavailable
from jobcore.settings import get_settings

log = logging.getLogger(__name__)

EXIT_UNAVAILABLE = 3  # dramatiq's own code for "broker connection failed"


class StartupChecks(Middleware):
    """Checks Redis and the control database when a worker process boots."""

    @property
    def actor_options(self) -> set[str]:
        return set()

    def after_process_boot(self, broker: Any) -> None:
        try:
            broker.ping()
            check_database(get_settings().database_url)
        except ServiceUnavailable as exc:
            log.critical("%s", exc)
            print(f"error: {exc}", file=sys.stderr, flush=True)
            # SystemExit is not swallowed by dramatiq's hook dispatch (it catches Exception).
            raise SystemExit(EXIT_UNAVAILABLE) from None
