from __future__ import annotations

import pytest

from jobcore.context import JobContext, ambient_context, current_context, job_context
from jobcore.errors import ConfigurationError
from jobcore.settings import Settings, mask_url

pytestmark = pytest.mark.unit


def test_context_round_trips_through_message_options():
    ctx = JobContext(tenant_id=3, admin_id=9, request_id="r-1", extra={"case_id": 44})
    data = ctx.to_dict()
    assert data == {"tenant_id": 3, "admin_id": 9, "request_id": "r-1", "extra": {"case_id": 44}}
    assert JobContext.from_dict(data) == ctx


def test_context_from_dict_is_forward_compatible():
    ctx = JobContext.from_dict({"tenant_id": "7", "agency_slug": "north"})
    assert ctx.tenant_id == 7 and ctx.extra == {"agency_slug": "north"}
    assert JobContext.from_dict(None) == JobContext()


def test_ambient_context_is_scoped_to_the_block():
    assert ambient_context() is None
    with job_context(tenant_id=1) as outer:
        with job_context(tenant_id=2):
            assert ambient_context().tenant_id == 2
        assert ambient_context() is outer
    assert ambient_context() is None
    assert current_context() == JobContext()  # outside a job


def test_with_tenant_copies():
    base = JobContext(user_id=5)
    assert base.with_tenant(8) == JobContext(tenant_id=8, user_id=5)
    assert base.tenant_id is None


def test_settings_from_env_types_and_dev_switch():
    s = Settings.from_env({"MAX_RETRIES": "4", "DEV_ENV": "1", "REDACT_KEYS": "pin, pass",
                           "POSTHOG_TIMEOUT": "1.5"})
    assert s.max_retries == 4 and s.dev_env and not s.schedules_active
    assert s.redact_keys == ("pin", "pass") and s.posthog_timeout == 1.5
    assert Settings.from_env({"DEV_ENV": "1", "SCHEDULES_ENABLED": "true"}).schedules_active
    assert Settings.from_env({}).schedules_active


@pytest.mark.parametrize("env,needle", [
    ({"MAX_RETRIES": "many"}, "MAX_RETRIES"),
    ({"DEV_ENV": "maybe"}, "DEV_ENV"),
    ({"MIN_BACKOFF_MS": "9000", "MAX_BACKOFF_MS": "8000"}, "BACKOFF"),
    ({"REDIS_URL": "localhost"}, "REDIS_URL"),
    ({"LEDGER_READONLY_ROLE": 'ro"; DROP TABLE x; --'}, "LEDGER_READONLY_ROLE"),
    ({"LEDGER_READONLY_ROLE": "Grafana"}, "LEDGER_READONLY_ROLE"),
])
def test_bad_settings_name_the_variable(env, needle):
    with pytest.raises(ConfigurationError, match=needle):
        Settings.from_env(env)


def test_mask_url():
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("postgresql://u:p@db/x") == "postgresql://u:***@db/x"
    assert mask_url("redis://h:6379") == "redis://h:6379"


def test_the_env_file_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    """What .ci/up writes to .env is what every process and jobctl read; an exported
    variable still overrides it."""
    from jobcore.settings import Settings

    env_file = tmp_path / ".env"
    env_file.write_text("# written by .ci/up\nREDIS_NAMESPACE=from-file\nMAX_RETRIES='5'\n")
    monkeypatch.setenv("JOBS_ENV_FILE", str(env_file))
    monkeypatch.delenv("REDIS_NAMESPACE", raising=False)
    monkeypatch.delenv("MAX_RETRIES", raising=False)
    assert (Settings.from_env().redis_namespace, Settings.from_env().max_retries) == ("from-file", 5)
    monkeypatch.setenv("MAX_RETRIES", "1")
    assert Settings.from_env().max_retries == 1
    monkeypatch.setenv("JOBS_ENV_FILE", "")
    assert Settings.from_env().redis_namespace == "dramatiq"
