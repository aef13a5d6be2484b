"""Units of work on a tenant's database.

Engines are created lazily in each process and never cross a fork (the cache is keyed
by pid). Connections are bounded, with one of two strategies (``TENANT_POOL_MODE``):

* ``lru`` (default): each process keeps at most ``TENANT_ENGINE_CACHE_SIZE`` engines,
  each pooling at most ``TENANT_POOL_SIZE`` connections (no overflow); the least
  recently used engine is disposed (its connections closed) when another tenant needs
  one. Worst case per process: cache × pool connections, whatever the tenant count;
  for W worker processes: W × cache × pool. Chosen as the default because it needs no
  extra infrastructure and keeps connections warm for the tenants that are busy.
* ``nullpool``: no pooling in the process (each session opens and closes one connection),
  for deployments with PgBouncer in front of the tenant databases: PgBouncer then pools
  across every process, and the budget is PgBouncer's ``default_pool_size`` per database.

Only idle engines are evicted (``Engine.dispose()`` leaves checked-out connections
open), and a thread that needs a new engine while every cached engine is busy waits for
one: so the bound holds under concurrency, not just on average. A worker also holds at
most one tenant connection per job thread, so the bound is min(cache × pool, threads)
per process. ``python -m tenancy budget --processes W --threads N --tenants T`` prints the
arithmetic for a deployment (see :mod:`tenancy.budget`); a process whose cache × pool
alone exceeds ``TENANT_CONNECTION_BUDGET`` refuses to open tenant sessions.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from jobcore.db import direct_url, normalise_url
from jobcore.errors import TenantError
from jobcore.pg import connect_kwargs
from jobcore.pg import install as install_pg_wait
from jobcore.settings import get_settings, mask_url
from tenancy.budget import check_process
from tenancy.registry import get_tenant, require_usable


class TenantEngines:
    """A per-process LRU of tenant engines that never exceeds ``capacity`` engines.

    ``Engine.dispose()`` does not close connections that are checked out, so evicting a
    busy engine would leak past the budget; only an idle engine (nothing checked out)
    is evicted. A thread that needs an engine while all ``capacity`` engines are busy
    waits (up to ``wait_s``) for one to become idle: backpressure instead of more
    connections. Total per process: at most capacity × pool_size connections.
    """

    def __init__(self, capacity: int, pool_size: int, mode: str, wait_s: float = 30.0) -> None:
        if mode not in ("lru", "nullpool"):
            raise ValueError(f"TENANT_POOL_MODE must be lru or nullpool, not {mode!r}")
        self.capacity = max(1, capacity)
        self.pool_size = pool_size
        self.mode = mode
        self.wait_s = wait_s
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._in_use: dict[str, int] = {}
        self._cond = threading.Condition()
        self._pid = os.getpid()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's engines are not ours
            for engine in self._engines.values():
                engine.dispose(close=False)
            self._engines.clear()
            self._in_use.clear()
            self._pid = os.getpid()

    def acquire(self, database_url: str) -> Engine:
        """The engine for ``database_url``, marked in use until :meth:`release`."""
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            self._check_fork()
            while True:
                engine = self._engines.get(database_url)
                if engine is not None:
                    self._engines.move_to_end(database_url)
                    break
                if len(self._engines) < self.capacity or self._evict_idle():
                    engine = self._create(database_url)
                    self._engines[database_url] = engine
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TenantError(f"tenant connection budget exhausted: {self.capacity} tenant engines "
                                      f"busy for {self.wait_s:.0f} s (TENANT_ENGINE_CACHE_SIZE)")
                self._cond.wait(remaining)
            self._in_use[database_url] = self._in_use.get(database_url, 0) + 1
            return engine

    def release(self, database_url: str) -> None:
        with self._cond:
            n = self._in_use.get(database_url, 0) - 1
            if n > 0:
                self._in_use[database_url] = n
            else:
                self._in_use.pop(database_url, None)
            self._cond.notify_all()

    def _evict_idle(self) -> bool:
        for url in list(self._engines):  # least recently used first
            if not self._in_use.get(url):
                self._engines.pop(url).dispose()
                return True
        return False

    def _create(self, database_url: str) -> Engine:
        s = get_settings()
        install_pg_wait()
        # Bounded waits (connect, statement and reply timeouts, keepalives): a tenant
        # database that hangs fails its own run instead of holding a worker thread.
        args = connect_kwargs(statement_timeout_ms=s.tenant_statement_timeout_ms,
                              connect_timeout_s=s.pg_connect_timeout_s, application_name="jobplatform-tenant",
                              options=s.pg_startup_options)
        # hide_parameters: bound values (e-mail bodies, beneficiaries, amounts) never
        # appear in exception text, and so never in job_errors, logs or error events.
        if self.mode == "nullpool":
            return create_engine(normalise_url(database_url), poolclass=NullPool, connect_args=args,
                                 hide_parameters=True)
        return create_engine(normalise_url(database_url), pool_size=self.pool_size, max_overflow=0,
                             pool_timeout=30, pool_pre_ping=True, pool_recycle=1800, connect_args=args,
                             hide_parameters=True)

    def dispose_all(self) -> None:
        with self._cond:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def __len__(self) -> int:
        return len(self._engines)


_engines: TenantEngines | None = None
_engines_lock = threading.Lock()
_direct: dict[tuple[int, str], Engine] = {}


def session_level_connection(session: Session) -> Connection:
    """A new connection to ``session``'s database for work that needs one server session
    across several transactions (a session-level advisory lock). Through PgBouncer in
    transaction mode each transaction may run on another server connection, so with
    ``PG_DIRECT_ADDRESS`` set this connects to the server itself (no pooling: it is
    closed when the caller is done); otherwise it comes from the session's engine."""
    bind = session.get_bind()
    s = get_settings()
    url = bind.url.render_as_string(hide_password=False)  # type: ignore[union-attr]
    if not s.pg_direct_address:
        return bind.connect()  # type: ignore[union-attr]
    key = (os.getpid(), url)
    with _engines_lock:
        engine = _direct.get(key)
        if engine is None:
            install_pg_wait()
            # Direct to PostgreSQL, so the timeouts can travel as startup options again.
            args = connect_kwargs(statement_timeout_ms=s.tenant_statement_timeout_ms,
                                  connect_timeout_s=s.pg_connect_timeout_s, application_name="jobplatform-session",
                                  options=True)
            engine = _direct[key] = create_engine(normalise_url(direct_url(url, s)), poolclass=NullPool,
                                                  connect_args=args, hide_parameters=True)
    return engine.connect()


def engines() -> TenantEngines:
    """This process's tenant engine cache (built from settings on first use)."""
    global _engines
    if _engines is None:
        with _engines_lock:
            if _engines is None:
                s = get_settings()
                check_process(s)
                _engines = TenantEngines(s.tenant_engine_cache_size, s.tenant_pool_size, s.tenant_pool_mode)
    return _engines


@contextmanager
def tenant_session(tenant_id: int) -> Iterator[Session]:
    """One unit of work on the tenant's database: commit on success, roll back on any
    exception, BaseException included (dramatiq's time-limit and revocation interrupts).
    An unreachable tenant database raises :class:`TenantError` naming it (masked URL); so
    does a tenant that is inactive or still provisioning."""
    tenant = require_usable(get_tenant(tenant_id))
    cache = engines()
    session = Session(cache.acquire(tenant.database_url), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except OperationalError as exc:
        session.rollback()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise TenantError(f"tenant {tenant.id} database {mask_url(tenant.database_url)} failed: {reason}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()  # returns the connection to the engine's pool first
        cache.release(tenant.database_url)
