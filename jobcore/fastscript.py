"""A Lua script called over a connection kept per thread (the hot path of every job).

redis-py's generic command path (pool checkout and release with a pid check, retry
wrapper, metrics hooks, the ``Script`` object's own wrapper) costs more Python time than
the round trip itself: profiled here, two such calls per job took ~37% of a worker's GIL
time. The platform calls its scripts once or twice per job, so it sends them on a
connection of its own per thread and reads the reply directly.

Failover: the per-thread connection comes from the client's pool factory, so with
Sentinel every new connection asks the sentinels for the current primary. A call whose
connection breaks raises (the caller decides: a script's effect may or may not have been
applied), and the next call connects afresh; a primary that lacks the script (a new
primary, or a restarted Redis: the script cache is neither replicated nor persisted)
gets it loaded and the call is sent once more.

Durability (``REDIS_WAIT_REPLICAS``): with :class:`Replication` ``replicas > 0``, each
call is followed on the same connection by ``WAIT replicas timeout``, pipelined (one
round trip, plus the replicas' acknowledgement). The broker uses it for its enqueue and
ack/nack script; fetch and START need not wait (see :mod:`jobcore.broker`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replication:
    """How many replicas must confirm a script's writes, and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 500


class NotReplicated(redis.RedisError):
    """The write was applied on the primary but fewer replicas than required confirmed it
    in time: it could be lost by a failover."""


class FastScript:
    """``script(keys=[...], args=[...])`` like redis-py's ``Script``, one connection per
    thread (and per process: a connection is never used across ``fork``)."""

    #: Shortfalls of replica confirmations (all scripts of the process), for metrics and tests.
    shortfalls = 0
    _last_warning = 0.0

    def __init__(self, client: redis.Redis, source: str | bytes, replication: Replication | None = None) -> None:
        self.client = client
        self._script = client.register_script(source)
        self._local = threading.local()
        self.replication = replication or Replication()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self.client.connection_pool.make_connection()
            # Connect explicitly: a Sentinel-managed connection finds the primary in
            # connect(); redis-py's send path would otherwise connect to the pool's
            # default address (see jobcore.redis_client).
            conn.connect()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def __call__(self, *, keys: list[Any], args: list[Any], require_replicas: bool = False) -> Any:
        """Run the script. With replication configured, a shortfall of confirmations raises
        :class:`NotReplicated` if ``require_replicas``, else it is logged and counted."""
        wait = self.replication.replicas
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.send_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
                if wait:
                    conn.send_command("WAIT", wait, self.replication.timeout_ms)
                error: redis.ResponseError | None = None
                try:
                    reply = conn.read_response()
                except redis.ResponseError as exc:  # the WAIT reply is still to be read
                    if not wait:
                        raise
                    error, reply = exc, None
                if wait:
                    acked = int(conn.read_response())
                    if error is not None:
                        raise error
                    if acked < wait:
                        self._shortfall(acked, require_replicas)
                return reply
            except redis.exceptions.NoScriptError:
                # A new primary after a failover, or a restarted Redis (its script cache
                # is empty): load and send once more.
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

    def _shortfall(self, acked: int, required: bool) -> None:
        FastScript.shortfalls += 1
        message = (f"write confirmed by {acked} of the {self.replication.replicas} replicas required "
                   f"within {self.replication.timeout_ms} ms (REDIS_WAIT_REPLICAS): a failover now could lose it")
        if required:
            raise NotReplicated(message)
        now = time.monotonic()
        if now - FastScript._last_warning > 10:
            FastScript._last_warning = now
            log.warning("%s (%d such writes so far)", message, FastScript.shortfalls)
