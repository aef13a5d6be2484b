"""Plain dramatiq: RedisBroker with its default middleware, no ledger. ``dramatiq bench.plain_app``."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.jobs import declare

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace=os.environ["BENCH_PLAIN_NAMESPACE"])
dramatiq.set_broker(broker)
ACTORS = declare(broker)
