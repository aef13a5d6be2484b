"""A schedule whose cadence fails with secrets in its exception message
(EXTRA_SCHEDULES_MODULE=tests.support.leaky_schedules, SCHEDULES_ONLY=test_leaky).

The scheduler, the exporter and ``jobctl schedules`` all compute fire times, so each logs
this exception (with its traceback) on its own real code path: what the log-redaction
tests read back from each process's output."""

from __future__ import annotations

from datetime import datetime, timedelta

from periodic.cadence import PeriodiqAdapter
from periodic.schedules import Schedule
from tests.support.periodic_schedules import SCHEDULES as BASE

URL_SECRET = "Url-Secret-41"
PAIR_SECRET = "Kv-Secret-42"
SECRETS = (URL_SECRET, PAIR_SECRET)


class LeakyCadence(PeriodiqAdapter):
    """Never computes a fire time: fails the way a misconfigured feed client would."""

    tz = "UTC"

    def next_after(self, after: datetime) -> datetime:
        raise ConnectionError(f"status feed https://feed:{URL_SECRET}@status.example/v1 refused the login "
                              f"password={PAIR_SECRET}")

    def describe(self) -> str:
        return "leaky (always fails)"


SCHEDULES = [*BASE, Schedule("test_leaky", "periodic_test_leaky", "TENANT_PROBE", LeakyCadence(), "escrow", "LOW",
                             timedelta(seconds=60), timedelta(seconds=30))]
