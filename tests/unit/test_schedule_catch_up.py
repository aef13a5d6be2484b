"""Catch-up planning with an injected clock: what a restarted scheduler sends, what it
records as missed, per catch-up policy (``grace``: only within the grace window;
``period``: the newest tick while its period lasts)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from periodic.cadence import EverySeconds
from periodic.scheduler import plan_catch_up
from periodic.schedules import CATCH_UP_GRACE, CATCH_UP_PERIOD, production_schedules

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


def test_a_grace_policy_daily_tick_beyond_the_grace_window_is_missed_not_run():
    dr = dataclasses.replace(schedule("dr_auto_approval"), catch_up=CATCH_UP_GRACE)
    late, recent = plan_catch_up(dr, et(2026, 11, 19, 6, 0), et(2026, 11, 20, 7, 20), et(2026, 11, 20, 7, 30))
    assert (late, recent) == ([et(2026, 11, 20, 6, 0).astimezone(UTC)], [])


@pytest.mark.parametrize("name", ["dr_auto_approval", "case_close_reminders"])
def test_a_scheduler_outage_from_0530_to_0800_et_still_runs_the_days_0600_tick(name):
    """The issue's case: 60 minutes of grace used to record 06:00 MISSED at 08:00, so the
    day's DR auto-approval and close reminders waited until the next day."""
    daily = schedule(name)
    late, recent = plan_catch_up(daily, et(2026, 11, 19, 6, 0), et(2026, 11, 20, 8, 0), et(2026, 11, 20, 8, 0))
    assert (late, recent) == ([], [et(2026, 11, 20, 6, 0).astimezone(UTC)])
    # ... until the period ends: at 05:59 the next morning it is still sent, once the next tick is due it is not.
    assert plan_catch_up(daily, et(2026, 11, 19, 6, 0), et(2026, 11, 21, 5, 59), et(2026, 11, 21, 5, 59))[1] == [
        et(2026, 11, 20, 6, 0).astimezone(UTC)]
    late, recent = plan_catch_up(daily, et(2026, 11, 19, 6, 0), et(2026, 11, 21, 8, 0), et(2026, 11, 21, 8, 0))
    assert (late, recent) == ([et(2026, 11, 20, 6, 0).astimezone(UTC)], [et(2026, 11, 21, 6, 0).astimezone(UTC)])


def test_a_long_outage_sends_only_the_newest_tick_of_a_period_schedule():
    weekly = schedule("account_balance_check")  # Sundays 01:00 ET
    last = et(2026, 11, 8, 1, 0)
    now = et(2026, 11, 25, 12, 0)  # a Wednesday, 2.5 weeks later
    late, recent = plan_catch_up(weekly, last, now, now)
    assert late == [et(2026, 11, 15, 1, 0).astimezone(UTC)]
    assert recent == [et(2026, 11, 22, 1, 0).astimezone(UTC)]


def test_frequent_schedules_keep_a_short_grace_even_within_their_period():
    reports = schedule("report_generation")  # every minute: its period is shorter than its grace anyway
    heal = dataclasses.replace(schedule("huntington_auto_heal"), cadence=EverySeconds(3600))
    now = datetime(2026, 5, 1, 10, 30, tzinfo=UTC)
    assert plan_catch_up(heal, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), now, now) == (
        [datetime(2026, 5, 1, 10, 0, tzinfo=UTC)], [])  # 30 min late, 3 min grace: missed
    assert plan_catch_up(reports, datetime(2026, 5, 1, 10, 20, tzinfo=UTC), now, now)[1] == [
        datetime(2026, 5, 1, 10, m, tzinfo=UTC) for m in (27, 28, 29, 30)]


def test_every_daily_weekly_and_3_day_schedule_catches_up_within_its_period():
    """The decision per production schedule (reasons in periodic/schedules.py): the
    idempotent jobs whose tick would otherwise be lost for a day or more use ``period``;
    the every-N-minutes ones keep ``grace`` (the next tick does the same work)."""
    policies = {s.name: s.catch_up for s in production_schedules()}
    assert {n for n, p in policies.items() if p == CATCH_UP_PERIOD} == {
        "dr_auto_approval", "case_close_reminders", "account_balance_check", "account_balance_reminders",
        "agency_health_checks", "agency_overnight_aggregations"}
    for s in production_schedules():
        if s.catch_up == CATCH_UP_GRACE:
            start = datetime(2026, 5, 1, tzinfo=UTC)
            period = s.cadence.next_after(s.cadence.next_after(start)) - s.cadence.next_after(start)
            assert period <= timedelta(hours=1), s.name


def test_an_unknown_catch_up_policy_is_refused():
    with pytest.raises(ValueError, match="catch_up"):
        dataclasses.replace(schedule("dr_auto_approval"), catch_up="always")


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
    late, recent = plan_catch_up(aggregations, et(2026, 3, 7, 2, 15), et(2026, 3, 8, 2, 59), et(2026, 3, 8, 4, 0))
    assert late == [] and [t.astimezone(ET).strftime("%H:%M %Z") for t in recent] == ["03:00 EDT"]
