"""Clock tests with explicit instants: DST, Sundays, the 3-day cadence, every schedule."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from periodic.cadence import Cron, EveryNDays, EverySeconds
from periodic.schedules import BALANCE_REMINDER_ANCHOR, production_schedules

pytestmark = pytest.mark.unit
ET = ZoneInfo("America/New_York")


def et(*args: int) -> datetime:
    return datetime(*args, tzinfo=ET)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_6am_et_is_10_or_11_utc_across_dst():
    cron = Cron("0 6 * * *")
    assert cron.next_after(utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 15, 11, 0)  # EST
    assert cron.next_after(utc(2026, 7, 15, 0, 0)) == utc(2026, 7, 15, 10, 0)  # EDT


def test_spring_forward_0230_runs_once_right_after_the_jump():
    """As Debian's cron does (and cronsim): a time the clock skips fires once, at 03:00 EDT."""
    cron = Cron("30 2 * * *")
    fires = cron.fire_times_between(et(2026, 3, 7, 12, 0), et(2026, 3, 9, 12, 0))
    assert [f.astimezone(ET).strftime("%m-%d %H:%M %Z") for f in fires] == ["03-08 03:00 EDT", "03-09 02:30 EDT"]


def test_fall_back_0130_runs_once():
    cron = Cron("30 1 * * *")
    fires = cron.fire_times_between(et(2026, 10, 31, 12, 0), et(2026, 11, 2, 12, 0))
    assert fires == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]  # first 01:30 (EDT), then EST


def test_fall_back_every_30_minutes_has_no_duplicate_instants():
    cron = Cron("*/30 * * * *")
    fires = cron.fire_times_between(utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 8, 0))
    assert len(fires) == len(set(fires))
    assert fires == sorted(fires)


def test_sunday_fires_weekly_with_0_and_7():
    for expr in ("0 1 * * 0", "0 1 * * 7", "0 1 * * sun"):
        fires = Cron(expr).fire_times(utc(2026, 11, 16, 0, 0), 3)  # from a Monday
        assert [f.astimezone(ET).strftime("%a %m-%d %H:%M") for f in fires] == [
            "Sun 11-22 01:00", "Sun 11-29 01:00", "Sun 12-06 01:00"], expr


def test_process_time_zone_does_not_matter(monkeypatch):
    import time as _time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    _time.tzset()
    try:
        assert Cron("0 6 * * *").next_after(utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 15, 11, 0)
    finally:
        monkeypatch.delenv("TZ")
        _time.tzset()


def test_three_day_cadence_crosses_end_of_february_and_31_day_months():
    cadence = EveryNDays(3, time(1, 0), date(2026, 2, 24))
    feb = cadence.fire_times(et(2026, 2, 23, 12, 0), 4)
    assert [f.astimezone(ET).date() for f in feb] == [date(2026, 2, 24), date(2026, 2, 27), date(2026, 3, 2),
                                                      date(2026, 3, 5)]
    july = EveryNDays(3, time(1, 0), date(2026, 7, 28)).fire_times(et(2026, 7, 27, 0, 0), 4)
    assert [f.astimezone(ET).date() for f in july] == [date(2026, 7, 28), date(2026, 7, 31), date(2026, 8, 3),
                                                       date(2026, 8, 6)]
    # Always 01:00 local; 72 h apart except across a DST change (71 h / 73 h).
    assert {f.astimezone(ET).time() for f in feb + july} == {time(1, 0)}
    gaps = {b - a for a, b in zip(feb, feb[1:], strict=False)}
    assert gaps == {timedelta(hours=72)}


def test_three_day_cadence_is_not_day_of_month_step():
    stepped = Cron("0 1 */3 * *").fire_times(et(2026, 1, 27, 12, 0), 3)  # 28, 31, then 1 Feb: 1 day later
    assert (stepped[2] - stepped[1]) == timedelta(days=1)
    true = EveryNDays(3, time(1, 0), BALANCE_REMINDER_ANCHOR).fire_times(et(2026, 1, 27, 12, 0), 3)
    assert {b - a for a, b in zip(true, true[1:], strict=False)} == {timedelta(days=3)}


def test_every_n_minutes_is_aligned():
    assert EverySeconds(300).next_after(utc(2026, 5, 1, 10, 2, 31)) == utc(2026, 5, 1, 10, 5)
    assert EverySeconds(60).next_after(utc(2026, 5, 1, 10, 5)) == utc(2026, 5, 1, 10, 6)


def test_periodiq_adapter_methods():
    cron = Cron("0 6 * * *")
    assert cron.validate(utc(2026, 1, 15, 11, 0, 0))
    assert not cron.validate(utc(2026, 1, 15, 11, 1, 0))
    import pendulum

    now = pendulum.datetime(2026, 1, 15, 3, 0, tz="Asia/Tokyo")
    nxt = cron.next_valid_date(now)
    assert nxt == pendulum.datetime(2026, 1, 15, 11, 0, tz="UTC")
    assert (nxt - now).total_seconds() > 0


EXPECTED_NEXT = {  # from Saturday 2026-11-21 12:00 ET
    "dr_auto_approval": ["11-22 06:00", "11-23 06:00", "11-24 06:00"],
    "case_close_reminders": ["11-22 06:00", "11-23 06:00", "11-24 06:00"],
    "account_balance_check": ["11-22 01:00", "11-29 01:00", "12-06 01:00"],
    "account_balance_reminders": ["11-24 01:00", "11-27 01:00", "11-30 01:00"],  # anchor + 321 d = 11-21
    "report_generation": ["11-21 12:01", "11-21 12:02", "11-21 12:03"],
    "aws_status_check": ["11-21 12:05", "11-21 12:10", "11-21 12:15"],
    "user_offsite_tracking": ["11-21 12:30", "11-21 13:00", "11-21 13:30"],
    "huntington_auto_heal": ["11-21 12:01", "11-21 12:02", "11-21 12:03"],
    "email_sync": ["11-21 12:15", "11-21 12:30", "11-21 12:45"],
    "agency_notifications": ["11-21 12:15", "11-21 12:30", "11-21 12:45"],
    "agency_health_checks": ["11-22 03:00", "11-23 03:00", "11-24 03:00"],
    "agency_overnight_aggregations": ["11-22 02:15", "11-23 02:15", "11-24 02:15"],
    "agency_cleanup": ["11-21 12:40", "11-21 13:40", "11-21 14:40"],
}


def test_every_schedule_next_three_fire_times():
    start = et(2026, 11, 21, 12, 0)
    schedules = production_schedules()
    assert {s.name for s in schedules} == set(EXPECTED_NEXT)
    for s in schedules:
        fires = [f.astimezone(ET).strftime("%m-%d %H:%M") for f in s.cadence.fire_times(start, 3)]
        assert fires == EXPECTED_NEXT[s.name], s.name
