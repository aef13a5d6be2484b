"""Units of the scaling work: worker identities, Redis targets, direct PostgreSQL URLs, and
the reply bound of connections that carry no startup options (PgBouncer)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from jobcore.broker import worker_identity
from jobcore.db import direct_url
from jobcore.errors import ConfigurationError
from jobcore.pg import DEFAULT_SILENCE_S, connect_kwargs, silence_limit
from jobcore.redis_client import redis_target
from jobcore.settings import Settings

pytestmark = pytest.mark.unit


def test_worker_identity_names_the_host_and_is_safe_in_key_names():
    ident = worker_identity("web-3.prod.example.com:1")
    assert ident.startswith("web-3-prod-example-com-1-") and f"-{os.getpid()}-" in ident
    assert "." not in ident and ":" not in ident
    assert worker_identity("a") != worker_identity("a")


def test_redis_target_masks_the_password_and_names_the_sentinels():
    plain = Settings(redis_url="redis://jobs:hunter2@10.0.0.5:6379/0", dev_env=True)
    assert redis_target(plain) == "redis://jobs:***@10.0.0.5:6379/0"
    ha = Settings(redis_url="rediss://:hunter2@ignored:1/0", redis_sentinels=("s1:26379", "s2:26379"),
                  redis_sentinel_service="jobs", dev_env=True)
    assert "hunter2" not in redis_target(ha)
    assert redis_target(ha).startswith("sentinel service 'jobs' via s1:26379,s2:26379")


@pytest.mark.parametrize("env, message", [
    ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_SERVICE"),
    ({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_SERVICE": "x"}, "not host:port"),
    ({"REDIS_URL": "http://redis:6379"}, "REDIS_URL must start with"),
    ({"PG_DIRECT_ADDRESS": "db"}, "PG_DIRECT_ADDRESS"),
    ({"REDIS_WAIT_REPLICAS": "-1"}, "REDIS_WAIT_REPLICAS"),
])
def test_bad_connection_settings_are_refused(env, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({"DEV_ENV": "1", **env})


def test_direct_url_points_at_the_server_behind_pgbouncer():
    s = Settings(pg_direct_address="db.internal:5432", dev_env=True)
    assert direct_url("postgresql://jobs:pw@pgbouncer:6432/tenant_a", s) == \
        "postgresql+psycopg2://jobs:pw@db.internal:5432/tenant_a"
    assert direct_url("postgresql://jobs:pw@pgbouncer:6432/t", Settings(dev_env=True)) == \
        "postgresql://jobs:pw@pgbouncer:6432/t"


def test_connections_without_startup_options_wait_as_long_as_their_statement_timeout():
    """Behind PgBouncer the statement timeout is the database's, not in the connection's
    options: the client-side bound must still cover it (a 5 min tenant query must not be
    given up at the 60 s default)."""
    connect_kwargs(statement_timeout_ms=300_000, application_name="jobplatform-test-pooled", options=False)

    def conn(app: str) -> SimpleNamespace:
        return SimpleNamespace(info=SimpleNamespace(options="", dsn_parameters={"application_name": app}))

    assert silence_limit(conn("jobplatform-test-pooled")) == 305.0
    assert silence_limit(conn("someone-else")) == DEFAULT_SILENCE_S
    with_options = SimpleNamespace(info=SimpleNamespace(options="-c statement_timeout=30000"))
    assert silence_limit(with_options) == 35.0
