"""The platform with its full middleware stack and ledger. ``dramatiq bench.tracked_app``."""

from __future__ import annotations

import jobplatform
from bench.jobs import declare

broker = jobplatform.broker
ACTORS = declare(broker)
