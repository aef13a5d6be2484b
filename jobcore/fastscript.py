"""A Lua script called over a connection kept per thread (the hot path of every job).

redis-py's generic command path (pool checkout and release with a pid check, retry
wrapper, metrics hooks, the ``Script`` object's own wrapper) costs more Python time than
the round trip itself: profiled here, two such calls per job took ~37% of a worker's GIL
time. The platform calls its scripts once or twice per job, so it sends them on a
connection of its own per thread and reads the reply directly.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis


class FastScript:
    """``script(keys=[...], args=[...])`` like redis-py's ``Script``, one connection per
    thread (and per process: a connection is never used across ``fork``)."""

    def __init__(self, client: redis.Redis, source: str | bytes) -> None:
        self.client = client
        self._script = client.register_script(source)
        self._local = threading.local()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self.client.connection_pool.make_connection()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def __call__(self, *, keys: list[Any], args: list[Any]) -> Any:
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.send_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                # Redis restarted (its script cache is empty): load and send once more.
                if attempt == 2:
                    raise
                self.client.script_load(self._script.script)
            except (redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()
                self._local.conn = None
                # A reply lost with the connection may or may not have been applied; the
                # platform's scripts are not blindly repeatable, so the caller decides.
                raise
        raise AssertionError("unreachable")
