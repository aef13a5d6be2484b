"""The benchmark job bodies, shared by the plain and the tracked app so both run the same code."""

from __future__ import annotations

import os
import time

import redis

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        from jobcore.redis_client import make_client
        from jobcore.settings import get_settings

        _client = make_client(get_settings())
    return _client


def noop() -> None:
    return None


def sleep_1ms() -> None:
    time.sleep(0.001)


def latency(sent_at: float) -> None:
    """Record how long after ``send()`` returned the job started."""
    _redis().rpush(os.environ["BENCH_LATENCY_KEY"], time.time() - sent_at)


def declare(broker: object) -> dict[str, object]:
    import dramatiq

    return {
        name: dramatiq.actor(fn, actor_name=f"bench_{name}", queue_name="bench", broker=broker, max_retries=0)
        for name, fn in (("noop", noop), ("sleep_1ms", sleep_1ms), ("latency", latency))
    }
