"""The one place Redis clients are built from settings (timeouts on every call)."""

from __future__ import annotations

import redis

from jobcore.settings import Settings


def make_client(settings: Settings, *, socket_timeout: float = 30.0) -> redis.Redis:
    """A client for ``REDIS_URL``: bounded connect and read timeouts turn a hung Redis into
    errors instead of stuck threads; idle connections are health-checked before use."""
    return redis.Redis.from_url(settings.redis_url, socket_timeout=socket_timeout, socket_connect_timeout=5,
                                health_check_interval=30)
