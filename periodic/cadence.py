"""Cadences: when a schedule fires, computed in the schedule's own time zone.

periodiq 0.14 evaluates cron in the scheduler process's local time zone, never fires a
Sunday (``0`` in the day-of-week field: it compares with ``isoweekday()``, where Sunday
is 7), and has no "every N days". These cadences fix that and plug straight into
periodiq: its scheduler only calls ``validate(now)`` and ``next_valid_date(now)`` on an
actor's ``periodic`` option.

All computations are on aware datetimes; results are UTC. Wall-clock times that do not
exist (the spring-forward gap) fire once, at the instant the clock jumps to (a 02:30
job runs at 03:30 EDT); times that exist twice (fall-back) fire once, at the first
occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError


class Cadence(Protocol):
    tz: str

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware), in UTC."""

    def describe(self) -> str: ...


def _aware(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("naive datetime: cadences need aware datetimes")
    return dt


def _local_to_utc(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time. fold=0: the first of two ambiguous times;
    a non-existent time resolves with the offset before the jump (i.e. after it)."""
    local = datetime.combine(day, at, tzinfo=tz).replace(fold=0)
    utc = local.astimezone(UTC)
    # A time in the spring-forward gap does not round-trip; zoneinfo already maps it to
    # the instant the clock jumps to plus the gap offset, which is what we want.
    return utc


class PeriodiqAdapter:
    """The two methods periodiq's Scheduler calls, on top of :meth:`Cadence.next_after`."""

    def next_after(self, after: datetime) -> datetime:  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def validate(self, now: datetime) -> bool:
        """True if a fire time falls in the second that ``now`` is in."""
        start = _aware(now).astimezone(UTC).replace(microsecond=0)
        return self.next_after(start - timedelta(microseconds=1)) < start + timedelta(seconds=1)

    def next_valid_date(self, last: datetime) -> datetime:
        """Next fire time after ``last``, returned in ``last``'s type and zone (periodiq
        subtracts ``pendulum.now()`` from it)."""
        nxt = self.next_after(_aware(last))
        try:
            import pendulum

            return pendulum.instance(nxt).in_timezone(last.tzinfo)  # type: ignore[arg-type]
        except Exception:
            return nxt.astimezone(last.tzinfo)

    def fire_times(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times after ``after``."""
        out: list[datetime] = []
        current = after
        for _ in range(count):
            current = self.next_after(current)
            out.append(current)
        return out

    def fire_times_between(self, start: datetime, end: datetime, limit: int = 10_000) -> list[datetime]:
        """Fire times in ``(start, end]``."""
        out: list[datetime] = []
        current = start
        while len(out) < limit:
            current = self.next_after(current)
            if current > end:
                break
            out.append(current)
        return out


@dataclass(frozen=True)
class Cron(PeriodiqAdapter):
    """A 5-field cron expression evaluated in ``tz`` by cronsim (Sunday is 0, 7 or ``sun``).

    cronsim evaluates in the expression's own zone and follows Debian cron on DST days: a
    time skipped by the spring-forward jump fires once, right after the jump (a 02:30 job
    runs at 03:00 EDT); a time that happens twice at fall-back fires once, the first time."""

    expr: str
    tz: str = "America/New_York"

    def __post_init__(self) -> None:
        if len(self.expr.split()) != 5:
            raise ValueError(f"cron needs 5 fields: {self.expr!r}")
        try:
            CronSim(self.expr, datetime.now(ZoneInfo(self.tz)))
        except CronSimError as exc:
            raise ValueError(f"cron {self.expr!r}: {exc}") from None

    def next_after(self, after: datetime) -> datetime:
        start = _aware(after).astimezone(ZoneInfo(self.tz))
        try:
            return next(CronSim(self.expr, start)).astimezone(UTC)
        except StopIteration:
            raise ValueError(f"cron {self.expr!r} never fires") from None

    def describe(self) -> str:
        return f"cron '{self.expr}' ({self.tz})"


@dataclass(frozen=True)
class EveryNDays(PeriodiqAdapter):
    """Every ``days`` days at ``at`` local time, counted from ``anchor`` (a fire day).

    A true N-day cadence: it does not reset at month ends like ``*/3`` in the
    day-of-month field does (31 → 1 would be 1 day apart)."""

    days: int
    at: time
    anchor: date
    tz: str = "America/New_York"

    def next_after(self, after: datetime) -> datetime:
        tz = ZoneInfo(self.tz)
        after = _aware(after).astimezone(UTC)
        local_day = after.astimezone(tz).date()
        offset = (local_day - self.anchor).days
        k = offset // self.days - 1  # start one period early, then walk forward
        while True:
            day = self.anchor + timedelta(days=k * self.days)
            fire = _local_to_utc(day, self.at, tz)
            if fire > after:
                return fire
            k += 1

    def describe(self) -> str:
        return f"every {self.days} days at {self.at:%H:%M} from {self.anchor} ({self.tz})"


@dataclass(frozen=True)
class EverySeconds(PeriodiqAdapter):
    """Every ``seconds`` seconds, aligned to the Unix epoch (so every 5 minutes fires at
    :00, :05, ...). Minute cadences use it with ``seconds=60*N``."""

    seconds: int
    tz: str = "UTC"

    def next_after(self, after: datetime) -> datetime:
        ts = _aware(after).timestamp()
        n = int(ts // self.seconds) + 1
        return datetime.fromtimestamp(n * self.seconds, UTC)

    def describe(self) -> str:
        if self.seconds % 60 == 0:
            return f"every {self.seconds // 60} min"
        return f"every {self.seconds} s"


def every_minutes(n: int) -> EverySeconds:
    return EverySeconds(60 * n)
