"""Catch-up planning with an injected clock: what a restarted scheduler sends, what it
records as missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from periodic.scheduler import plan_catch_up
from periodic.schedules import production_schedules

pytestmark = pytest.mark.unit
ET = ZoneInfo("America/New_York")


def schedule(name: str):
    return next(s for s in production_schedules() if s.name == name)


def et(*args: int) -> datetime:
    return datetime(*args, tzinfo=ET)


def test_daily_tick_missed_during_a_short_outage_is_sent_once_on_restart():
    dr = schedule("dr_auto_approval")  # 06:00 ET, 60 min grace
    last = et(2026, 11, 19, 6, 0)
    late, recent = plan_catch_up(dr, last, et(2026, 11, 20, 6, 20), et(2026, 11, 20, 6, 30))
    assert (late, recent) == ([], [et(2026, 11, 20, 6, 0).astimezone(UTC)])


def test_daily_tick_beyond_the_grace_window_is_missed_not_run():
    dr = schedule("dr_auto_approval")
    late, recent = plan_catch_up(dr, et(2026, 11, 19, 6, 0), et(2026, 11, 20, 7, 20), et(2026, 11, 20, 7, 30))
    assert (late, recent) == ([et(2026, 11, 20, 6, 0).astimezone(UTC)], [])


def test_every_minute_outage_splits_at_the_grace_window():
    reports = schedule("report_generation")  # every minute, 3 min grace
    now = datetime(2026, 5, 1, 10, 10, 30, tzinfo=UTC)
    late, recent = plan_catch_up(reports, datetime(2026, 5, 1, 10, 0, tzinfo=UTC), now, now)
    assert [t.minute for t in late] == [1, 2, 3, 4, 5, 6, 7]
    assert [t.minute for t in recent] == [8, 9, 10]


def test_nothing_is_due_again_once_the_last_tick_is_recorded():
    reports = schedule("report_generation")
    now = datetime(2026, 5, 1, 10, 10, 30, tzinfo=UTC)
    assert plan_catch_up(reports, datetime(2026, 5, 1, 10, 10, tzinfo=UTC), now, now) == ([], [])


def test_a_schedule_that_never_ticked_only_counts_from_the_scheduler_start():
    weekly = schedule("account_balance_check")
    started = et(2026, 11, 22, 1, 5)  # Sunday, five minutes after its 01:00 fire time
    assert plan_catch_up(weekly, None, started, started + timedelta(minutes=1)) == ([], [])


def test_catch_up_across_the_spring_forward_night():
    aggregations = schedule("agency_overnight_aggregations")  # 02:15 ET, 120 min grace
    late, recent = plan_catch_up(aggregations, et(2026, 3, 7, 2, 15), et(2026, 3, 8, 3, 0), et(2026, 3, 8, 4, 0))
    assert late == [] and [t.astimezone(ET).strftime("%H:%M %Z") for t in recent] == ["03:15 EDT"]
