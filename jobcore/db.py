"""The control database: one lazily created engine per process (never shared across fork)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from jobcore.errors import ServiceUnavailable
from jobcore.pg import connect_kwargs
from jobcore.pg import install as install_pg_wait
from jobcore.settings import Settings, get_settings, mask_url

_lock = threading.Lock()
_engine: Engine | None = None
_engine_pid: int | None = None


def libpq_dsn(url: str) -> str:
    """A libpq URL from an SQLAlchemy one (``postgresql+psycopg2://`` -> ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return ("postgresql" if scheme.startswith("postgres") else scheme) + sep + rest


def direct_url(url: str, settings: Settings | None = None) -> str:
    """``url`` pointed at the PostgreSQL server itself (``PG_DIRECT_ADDRESS``) instead of
    PgBouncer, for work that transaction pooling cannot carry (migrations, CREATE
    DATABASE, session-level locks); ``url`` unchanged when no direct address is set."""
    address = (settings or get_settings()).pg_direct_address
    if not address:
        return url
    from sqlalchemy.engine import make_url

    host, _, port = address.rpartition(":")
    return make_url(normalise_url(url)).set(host=host, port=int(port)).render_as_string(hide_password=False)


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and pin the psycopg2 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def make_engine(url: str, *, pool_size: int = 4, application_name: str = "jobplatform",
                settings: Settings | None = None) -> Engine:
    """An engine whose every wait is bounded (connect, statement and reply timeouts,
    keepalives: :mod:`jobcore.pg`), with liveness checks, so a database that is down or
    a connection that went half-open fails fast instead of hanging a thread.

    Bound parameters are kept out of error messages (``hide_parameters``): they carry
    e-mail bodies, beneficiaries and amounts, and errors end up in ``job_errors``,
    dashboards and PostHog."""
    s = settings or get_settings()
    install_pg_wait()
    return create_engine(
        normalise_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=30,
        hide_parameters=True,
        connect_args=connect_kwargs(statement_timeout_ms=s.pg_statement_timeout_ms,
                                    connect_timeout_s=s.pg_connect_timeout_s, application_name=application_name,
                                    options=s.pg_startup_options),
    )


def control_engine(settings: Settings | None = None) -> Engine:
    """The control database engine of this process (re-created after a fork)."""
    global _engine, _engine_pid
    pid = os.getpid()
    if _engine is not None and _engine_pid == pid:
        return _engine
    with _lock:
        if _engine is None or _engine_pid != pid:
            s = settings or get_settings()
            if _engine is not None:
                # Inherited from the parent: drop its pooled sockets without closing them
                # (closing would break the parent's connections).
                _engine.dispose(close=False)
            _engine = make_engine(s.database_url, pool_size=s.control_pool_size, settings=s)
            _engine_pid = pid
        return _engine


def reset_control_engine() -> None:
    """Forget this process's engine (tests switch databases with it)."""
    global _engine, _engine_pid
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine, _engine_pid = None, None


@contextmanager
def control_session() -> Iterator[Session]:
    """One unit of work on the control database: commit on success, roll back on any
    exception (BaseException included, so dramatiq interrupts roll back too)."""
    session = Session(control_engine(), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def check_database(url: str) -> None:
    """Raise :class:`ServiceUnavailable` with the masked URL if the database is unreachable."""
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        raise ServiceUnavailable(f"cannot reach PostgreSQL at {mask_url(url)}: {reason}") from None
    finally:
        engine.dispose()
