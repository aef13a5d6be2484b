"""Bounded waits on PostgreSQL, for every connection the platform opens.

A server that dies, a NAT that drops a connection or a proxy that stops forwarding
leaves a TCP connection *half-open*: the client's kernel sees nothing wrong, and libpq
waits for a reply for as long as TCP keeps the socket (measured on main: about two
hours). Three layers bound that:

* server side, ``statement_timeout`` (and ``lock_timeout``) in the connection's options;
* kernel side, TCP keepalives and ``tcp_user_timeout`` (dead peers of idle or sending
  connections);
* client side, :func:`install`: a psycopg2 wait callback that waits in short slices and
  gives up when nothing arrives for longer than the connection's statement timeout plus a
  grace (a peer that ACKs but never answers, which the two layers above cannot see). The
  short slices also let dramatiq's time limits and revocations interrupt a job thread
  that is waiting on the database (a thread blocked inside libpq never sees them).

A connection given up on is shut down, so it can never be reused half-way through a
query; SQLAlchemy's pool recognises the error as a disconnect and discards it.
"""

from __future__ import annotations

import logging
import os
import re
import select
import socket
import threading
from typing import Any

import psycopg2
import psycopg2.extensions

log = logging.getLogger(__name__)

#: How long past its statement timeout a silent connection is given (the server cancels
#: the statement itself at the timeout; this covers the cancel's own round trip).
REPLY_GRACE_S = 5.0
#: Bound for connections whose options carry no statement timeout (e.g. through PgBouncer).
DEFAULT_SILENCE_S = 60.0
_SLICE_S = 0.25
_TIMEOUT_RE = re.compile(r"statement_timeout=(\d{1,9})")
_lock = threading.Lock()
_installed = False
#: Statement timeouts (ms) of connections opened without startup options (PgBouncer), by
#: application name: the server applies them from the database's settings, and the wait
#: callback must not give up before they do.
_timeouts_by_app: dict[str, int] = {}


def connect_kwargs(*, statement_timeout_ms: int, connect_timeout_s: int = 5, application_name: str = "jobplatform",
                   options: bool = True) -> dict[str, Any]:
    """libpq parameters every platform connection uses (``options=False`` for servers
    that refuse startup options, such as PgBouncer; set the timeouts on the role there)."""
    kwargs: dict[str, Any] = {
        "connect_timeout": connect_timeout_s,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": max(1000, statement_timeout_ms),
    }
    if not options and statement_timeout_ms > 0:
        _timeouts_by_app[application_name] = max(statement_timeout_ms, _timeouts_by_app.get(application_name, 0))
    if options and statement_timeout_ms > 0:
        kwargs["options"] = (f"-c statement_timeout={statement_timeout_ms} "
                             f"-c lock_timeout={statement_timeout_ms} "
                             f"-c idle_in_transaction_session_timeout={max(statement_timeout_ms, 60_000)}")
    return kwargs


def silence_limit(conn: Any) -> float:
    """Seconds a wait on ``conn`` may see no data before the connection is given up."""
    try:
        found = _TIMEOUT_RE.search(conn.info.options or "")
    except Exception:  # an old libpq without PQoptions
        found = None
    if found is not None and int(found.group(1)) > 0:
        return int(found.group(1)) / 1000 + REPLY_GRACE_S
    if _timeouts_by_app:
        try:
            app = conn.info.dsn_parameters.get("application_name", "")
        except Exception:
            app = ""
        if app in _timeouts_by_app:
            return max(DEFAULT_SILENCE_S, _timeouts_by_app[app] / 1000 + REPLY_GRACE_S)
    return DEFAULT_SILENCE_S


def _shut(conn: Any) -> None:
    """Shut the connection's socket down (the next use fails at once, never half-way)."""
    try:
        fd = conn.fileno()
    except Exception:
        return
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def wait(conn: Any) -> None:
    """psycopg2 wait callback: poll until done, in short slices, within the silence limit."""
    limit = silence_limit(conn)
    silent = 0.0
    try:
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            fd = conn.fileno()
            if state == psycopg2.extensions.POLL_READ:
                ready = select.select([fd], [], [], _SLICE_S)[0]
            elif state == psycopg2.extensions.POLL_WRITE:
                ready = select.select([], [fd], [], _SLICE_S)[1]
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            if ready:
                silent = 0.0
                continue
            silent += _SLICE_S
            if silent >= limit:
                raise psycopg2.OperationalError(
                    f"server closed the connection unexpectedly: no reply from PostgreSQL within {limit:.0f} s "
                    "(half-open connection?)")
    except BaseException:
        # A timeout, or an interrupt of the waiting thread (time limit, revocation): the
        # query may still be in flight, so the connection must not be used again.
        _shut(conn)
        raise


def install() -> None:
    """Make :func:`wait` the process's psycopg2 wait callback (idempotent)."""
    global _installed
    with _lock:
        if not _installed:
            psycopg2.extensions.set_wait_callback(wait)
            _installed = True
