"""The one place Redis clients are built from settings.

Every process (worker, scheduler, exporter, CLI, console, producers) gets its clients
here, so all of them support the same deployments:

* a single Redis, ``REDIS_URL=redis://[user:password@]host:port/db`` (a password alone,
  ``redis://:password@host``, or an ACL user and its password);
* TLS, ``rediss://...``: the server certificate and host name are always verified,
  against ``REDIS_CA_FILE`` when set (else the system's CAs), with an optional client
  certificate (``REDIS_TLS_CERT_FILE``/``REDIS_TLS_KEY_FILE``);
* Redis Sentinel, ``REDIS_SENTINELS=host:port,...`` and ``REDIS_SENTINEL_SERVICE``: the
  primary is looked up from the sentinels on every new connection, so after a failover
  each connection that breaks reconnects to the new primary without a restart. The
  URL's scheme, credentials and db still apply to the primary; the sentinels' own
  credentials are ``REDIS_SENTINEL_USERNAME``/``REDIS_SENTINEL_PASSWORD``.

Every connection has bounded connect and read timeouts and TCP keepalives; pooled
commands are retried a few times on connection errors (``REDIS_RETRIES``), the
platform's scripts never blindly (:mod:`jobcore.fastscript`).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import Connection, ConnectionPool, SSLConnection, UnixDomainSocketConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from jobcore.errors import ConfigurationError
from jobcore.settings import Settings, mask_url

#: Default address of Sentinel-managed connections (never used: see make_client).
UNRESOLVABLE = "sentinel-managed-primary.invalid"
#: Seconds a sentinel has to answer "who is the primary?" (they answer from memory).
SENTINEL_SOCKET_TIMEOUT_S = 2.0


def redis_target(settings: Settings) -> str:
    """Where this process's Redis is, for messages: the URL with its password masked,
    and the sentinels when they pick the primary."""
    if settings.redis_sentinels:
        return (f"sentinel service {settings.redis_sentinel_service!r} via {','.join(settings.redis_sentinels)} "
                f"({mask_url(settings.redis_url)})")
    return mask_url(settings.redis_url)


def describe_error(exc: BaseException, settings: Settings) -> str:
    """One line for operators: where, and what went wrong (redis-py's messages carry no
    credentials; the URL is masked)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"cannot use Redis at {redis_target(settings)}: {type(exc).__name__}: {text}".rstrip(": ")


def _url_parts(settings: Settings) -> dict[str, Any]:
    try:
        parts = parse_url(settings.redis_url)
    except ValueError as exc:
        raise ConfigurationError(f"REDIS_URL: {exc}") from None
    # Connection options belong in settings, not in the URL: a query such as
    # ?ssl_cert_reqs=none would otherwise switch certificate checks off unnoticed.
    extra = set(parts) - {"host", "port", "db", "username", "password", "connection_class", "path"}
    if extra:
        raise ConfigurationError(f"REDIS_URL: query options are not supported ({', '.join(sorted(extra))}); "
                                 "use the REDIS_* settings")
    return parts


def _tls(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_ca_file:
        kwargs["ssl_ca_certs"] = settings.redis_ca_file
    if settings.redis_tls_cert_file:
        kwargs["ssl_certfile"] = settings.redis_tls_cert_file
        kwargs["ssl_keyfile"] = settings.redis_tls_key_file or None
    return kwargs


def _retry(settings: Settings) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), retries=settings.redis_retries)


def uses_tls(settings: Settings) -> bool:
    return settings.redis_url.startswith("rediss://")


def make_client(settings: Settings, *, socket_timeout: float | None = None) -> redis.Redis:
    """A client for this deployment's Redis primary (see the module docstring).

    ``socket_timeout`` (default ``REDIS_SOCKET_TIMEOUT_S``) bounds every reply; callers
    that block (BLPOP, XREAD BLOCK) block for less than it."""
    parts = _url_parts(settings)
    tls = uses_tls(settings)
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout if socket_timeout is not None else settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "health_check_interval": 30,
        "retry": _retry(settings),
        "username": parts.get("username"),
        "password": parts.get("password"),
        "db": parts.get("db", 0),
    }
    if tls:
        common.update(_tls(settings))
    if settings.redis_sentinels:
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": min(settings.redis_connect_timeout_s, SENTINEL_SOCKET_TIMEOUT_S),
            "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1),
            "username": settings.redis_sentinel_username or None,
            "password": settings.redis_sentinel_password or None,
        }
        if tls:
            sentinel_kwargs.update(ssl=True, **_tls(settings))
        addresses = [(host, int(port)) for host, _, port in (a.rpartition(":") for a in settings.redis_sentinels)]
        sentinel = Sentinel(addresses, sentinel_kwargs=sentinel_kwargs)
        # check_connection: a new connection PINGs first, so one made to a node that is
        # no longer the primary fails at once and the next asks the sentinels again.
        # The pool's default address is one that cannot resolve: redis-py 8 connects a
        # never-connected connection in its send path without asking the sentinels, to
        # localhost:6379 by default, which could be another Redis; this way it fails.
        return sentinel.master_for(settings.redis_sentinel_service, redis_class=redis.Redis, ssl=tls,
                                   check_connection=True, socket_keepalive=True, host=UNRESOLVABLE, port=1,
                                   **common)
    if parts.get("connection_class") is UnixDomainSocketConnection:
        common.pop("db", None)
        pool = ConnectionPool(connection_class=UnixDomainSocketConnection, path=parts.get("path"),
                              db=parts.get("db", 0), **common)
    else:
        pool = ConnectionPool(connection_class=SSLConnection if tls else Connection, socket_keepalive=True,
                              host=parts.get("host", "127.0.0.1"), port=parts.get("port", 6379), **common)
    return redis.Redis(connection_pool=pool)
