"""Seconds-scale schedules for the scheduler process tests (EXTRA_SCHEDULES_MODULE)."""

from __future__ import annotations

from datetime import timedelta

from periodic.cadence import Cron, EverySeconds
from periodic.schedules import CATCH_UP_PERIOD, Schedule

SCHEDULES = [
    Schedule("test_every_2s", "periodic_test_every_2s", "TENANT_PROBE", EverySeconds(2), "escrow", "LOW",
             timedelta(seconds=60), timedelta(seconds=30)),
    Schedule("test_every_5s", "periodic_test_every_5s", "TENANT_PROBE", EverySeconds(5), "escrow", "LOW",
             timedelta(seconds=60), timedelta(seconds=30)),
    Schedule("test_every_5s_short_grace", "periodic_test_every_5s_short_grace", "TENANT_PROBE", EverySeconds(5),
             "escrow", "HIGH", timedelta(seconds=1), timedelta(seconds=30)),
    # Targets an actor nobody declares: each tick must end FAILED, the scheduler must go on.
    Schedule("test_missing_target", "periodic_test_missing_target", "NO_SUCH_ACTOR", EverySeconds(2), "escrow",
             "LOW", timedelta(seconds=60), timedelta(seconds=30)),
    # Catch-up policy "period": a tick missed by more than the 1 s grace is still sent while
    # its 10 s period lasts (the seconds-scale stand-in for a daily job's day).
    Schedule("test_every_10s_period", "periodic_test_every_10s_period", "TENANT_PROBE", EverySeconds(10), "escrow",
             "HIGH", timedelta(seconds=1), timedelta(seconds=30), catch_up=CATCH_UP_PERIOD),
    # A daily cron tick (never fires during a test run unless sent by hand): late delivery.
    Schedule("test_daily", "periodic_test_daily", "TENANT_PROBE", Cron("0 6 * * *"), "escrow", "HIGH",
             timedelta(minutes=60), timedelta(minutes=30)),
]
