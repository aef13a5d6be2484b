"""Pure arithmetic and listing: the tenant connection budget, the schedule list command,
the configurable email sync interval and the DEV_ENV gating rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from jobcore.errors import ConfigurationError
from jobcore.settings import Settings
from tenancy.budget import check_process, compute

pytestmark = pytest.mark.unit


def test_connection_budget_for_40_and_1000_tenants_does_not_depend_on_the_tenant_count():
    s = Settings.from_env({"TENANT_ENGINE_CACHE_SIZE": "8", "TENANT_POOL_SIZE": "2",
                           "TENANT_CONNECTION_BUDGET": "64"})
    forty = compute(s, processes=4, threads=8, tenants=40)
    thousand = compute(s, processes=4, threads=8, tenants=1000)
    assert (forty.per_process_hard, forty.total_hard, forty.total_expected) == (16, 64, 32)
    assert (thousand.total_hard, thousand.total_expected) == (64, 32) and thousand.fits
    assert (forty.unbounded, thousand.unbounded) == (320, 8000)
    assert not compute(s, processes=5, threads=8, tenants=40).fits  # 5 x 16 = 80 > 64
    nullpool = compute(Settings.from_env({"TENANT_POOL_MODE": "nullpool"}), processes=4, threads=8, tenants=1000)
    assert nullpool.total_hard == 32


def test_a_process_whose_cache_alone_exceeds_the_budget_is_refused():
    check_process(Settings.from_env({"TENANT_ENGINE_CACHE_SIZE": "8", "TENANT_POOL_SIZE": "2",
                                     "TENANT_CONNECTION_BUDGET": "16"}))
    with pytest.raises(ConfigurationError, match="exceeds TENANT_CONNECTION_BUDGET = 15"):
        check_process(Settings.from_env({"TENANT_ENGINE_CACHE_SIZE": "8", "TENANT_POOL_SIZE": "2",
                                         "TENANT_CONNECTION_BUDGET": "15"}))


def test_list_command_prints_each_schedule_with_three_fire_times_in_et_and_utc():
    from periodic.__main__ import list_schedules
    from periodic.schedules import all_schedules

    out = list_schedules().splitlines()
    et = ZoneInfo("America/New_York")
    for s in all_schedules():
        i = next(n for n, line in enumerate(out) if line.startswith(f"{s.name}  [{s.severity}]"))
        assert f"-> {s.dispatcher} -> {s.target}" in out[i]
        fires = out[i + 1:i + 4]
        assert len(fires) == 3
        for line in fires:
            m = re.match(r"\s+\w{3} (\S+ \S+) (EST|EDT)\s+(\S+ \S+) UTC$", line)
            assert m, line
            as_utc = datetime.strptime(m.group(3), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            assert as_utc.astimezone(et).strftime("%Y-%m-%d %H:%M") == m.group(1)


def test_email_sync_interval_is_configurable(monkeypatch):
    from jobcore.settings import get_settings
    from periodic.schedules import production_schedules

    monkeypatch.setenv("EMAIL_SYNC_INTERVAL_MIN", "10")
    get_settings.cache_clear()
    try:
        sync = next(s for s in production_schedules() if s.name == "email_sync")
        assert (sync.dispatcher, sync.target, sync.cadence.describe()) == (
            "EMAIL_SYNC_PERIODIC", "EMAIL_SYNC_AGENCY", "every 10 min")
    finally:
        monkeypatch.delenv("EMAIL_SYNC_INTERVAL_MIN")
        get_settings.cache_clear()


def test_dev_env_gating():
    assert not Settings.from_env({"DEV_ENV": "1"}).schedules_active
    assert Settings.from_env({"DEV_ENV": "1", "SCHEDULES_ENABLED": "1"}).schedules_active
    assert Settings.from_env({"DEV_ENV": "0"}).schedules_active


def test_budget_command(capsys):
    from cli.main import main

    # defaults: cache 8 x pool 2 per process, budget 64
    assert main(["tenants", "budget", "--processes", "4", "--threads", "8", "--tenants", "1000"]) == 0
    assert "at most 16 tenant connections per process, 64 in total" in capsys.readouterr().out
    assert main(["tenants", "budget", "--processes", "5", "--tenants", "40"]) == 1
    assert "OVER BUDGET" in capsys.readouterr().out
