"""The platform with its full middleware stack and ledger. ``dramatiq bench.tracked_app``."""

from __future__ import annotations

import actors
from bench.jobs import declare

broker = actors.broker
ACTORS = declare(broker)
