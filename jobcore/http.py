"""Outbound HTTP with an overall deadline per call (docs/security.md, "Limits").

``requests`` timeouts bound each socket operation, not the call: a server that trickles
one byte every few seconds keeps a call alive indefinitely. :class:`DeadlineSession`
bounds the whole call (connect, send, headers and body): a watchdog timer shuts the
call's sockets down when the deadline passes, which ends any blocked read at once, and
the call raises :class:`DeadlineExceeded` (a ``requests.Timeout``, so callers that map
time-outs to "outcome unknown" keep doing so).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from jobcore.errors import ExternalServiceError


class DeadlineExceeded(requests.Timeout, ExternalServiceError):
    """The call did not complete within its overall deadline. A ``requests.Timeout`` (so
    callers that treat time-outs as "outcome unknown" keep doing so) and a platform
    :class:`ExternalServiceError`."""


class _Scope:
    """The sockets one call used, and whether its deadline fired."""

    def __init__(self) -> None:
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open = True

    def track(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self._open and sock is not None:
                self._socks.append(sock)

    def abort(self) -> None:
        with self._lock:
            if not self._open:
                return
            self.fired = True
            for sock in self._socks:
                try:
                    # The plain socket's shutdown (also for TLS sockets): wakes the reader
                    # blocked in recv() without touching the TLS object.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._open = False
            self._socks.clear()


_current = threading.local()


def _track(conn: HTTPConnection) -> None:
    # Recorded once the request is sent: the socket exists then, and http.client may
    # detach it from the connection (Connection: close) while the response still reads it.
    scope = getattr(_current, "scope", None)
    if scope is not None:
        scope.track(conn.sock)


class _TrackedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().request(*args, **kwargs)
        finally:
            _track(self)


class _TrackedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().request(*args, **kwargs)
        finally:
            _track(self)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackingAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _capped(timeout: Any, limit: float) -> Any:
    """A per-operation timeout never longer than the whole deadline."""
    if timeout is None:
        return (limit, limit)
    if isinstance(timeout, tuple):
        return tuple(limit if t is None else min(float(t), limit) for t in timeout)
    return min(float(timeout), limit)


class DeadlineSession(requests.Session):
    """A ``requests.Session`` whose every call completes, or fails, within ``deadline``
    seconds (overridable per call with ``deadline=``). Bodies are read eagerly
    (``stream=True`` is refused: its reads would happen after the deadline's scope)."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        if deadline <= 0:
            raise ValueError("deadline must be > 0")
        self.deadline = deadline
        for prefix in ("http://", "https://"):
            self.mount(prefix, _TrackingAdapter())

    def request(self, method: str, url: str, *args: Any,  # type: ignore[override]
                deadline: float | None = None, **kwargs: Any) -> requests.Response:
        """Like ``Session.request``; raises :class:`DeadlineExceeded` past the deadline."""
        if kwargs.get("stream"):
            raise ValueError("DeadlineSession reads bodies eagerly; stream=True is not supported")
        limit = self.deadline if deadline is None else deadline
        kwargs["timeout"] = _capped(kwargs.get("timeout"), limit)
        scope, previous = _Scope(), getattr(_current, "scope", None)
        _current.scope = scope
        timer = threading.Timer(limit, scope.abort)
        timer.daemon = True
        timer.start()
        try:
            return super().request(method, url, *args, **kwargs)
        except requests.RequestException as exc:
            if scope.fired:
                raise DeadlineExceeded(f"{method!s} {url!s}: no complete answer within the {limit:g} s deadline"
                                       ) from exc
            raise
        finally:
            timer.cancel()
            scope.close()
            _current.scope = previous
