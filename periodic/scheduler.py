"""The scheduler process: periodiq's scheduler loop with exactly-once, catch-up ticks.

Run it with ``python -m periodic`` (the documented equivalent of ``periodiq actors``:
it builds the platform (:mod:`jobplatform`), hands the periodic actors to a subclass of periodiq's
``Scheduler``, which decides what is due with periodiq's ``validate`` and
``next_valid_date``). periodiq's own loop wakes itself with SIGALRM and a handler that
puts into a ``queue.Queue`` the main thread is blocked on; a signal landing while that
thread holds the queue's lock deadlocks the scheduler for good (seen here after a
SIGSTOP/SIGCONT: no tick and no log line ever again). The loop here sleeps instead. On
every wake it:

1. **catches up**: for each schedule, fire times since its last recorded tick (or since
   this scheduler started) that are due: those its catch-up policy still allows (within
   the grace window; for ``period`` schedules also the newest tick while its period
   lasts) are sent now, once; older ones are recorded as MISSED (the dead-man's-switch
   alert fires);
2. **re-sends** ticks CLAIMED more than SCHEDULER_CLAIM_STALE_S ago and never sent (a
   scheduler died between its claim and its send; any live scheduler takes them over);
3. sends the actors periodiq finds due, through the same claim;
4. heartbeats in Redis (``<ns>:platform:schedulers``) for the "scheduler down" alert.

Each send first claims ``(schedule, tick)`` with a unique key in ``schedule_ticks``:
two schedulers running at once enqueue every tick exactly once.
Production schedules do not fire when ``DEV_ENV=1`` unless ``SCHEDULES_ENABLED=1``.
With ``DEV_ENV=1``, ``SCHEDULER_CLOCK_START`` starts the scheduler's clock at a given
instant (tests fire a production daily tick without waiting for it).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
from periodiq import Scheduler

from jobcore.settings import get_settings
from periodic.schedules import CATCH_UP_PERIOD, Schedule, all_schedules
from periodic.ticks import (
    claim_tick,
    last_tick_at,
    mark_enqueued,
    mark_failed,
    reclaim_stale_claims,
    record_missed,
)

log = logging.getLogger("periodic.scheduler")

MAX_MISSED_RECORDED = 1000


def plan_catch_up(schedule: Schedule, last_tick: datetime | None, started_at: datetime,
                  now: datetime) -> tuple[list[datetime], list[datetime]]:
    """The fire times due since the last recorded tick (or since this scheduler started,
    for a schedule that never ticked), split into (missed for good, still to be sent).
    A tick is still sent within the schedule's grace window; with the ``period`` catch-up
    policy also while its period lasts (the next tick is not due yet), so only the newest
    tick of a long outage. Ticks already recorded are never in either list."""
    since = last_tick or started_at
    due = schedule.cadence.fire_times_between(since, now, limit=100_000)

    def still_due(tick: datetime) -> bool:
        if now - tick <= schedule.grace:
            return True
        return schedule.catch_up == CATCH_UP_PERIOD and schedule.cadence.next_after(tick) > now

    late = [t for t in due if not still_due(t)]
    recent = [t for t in due if still_due(t)]
    return late, recent


def make_clock(start: str = "") -> Callable[[], datetime]:
    """The scheduler's clock: the system's, or (``start``, an aware ISO-8601 instant: tests)
    one that starts at ``start`` and runs on at the system clock's pace."""
    if not start:
        return lambda: datetime.now(UTC)
    begin = datetime.fromisoformat(start)
    if begin.tzinfo is None:
        raise ValueError(f"SCHEDULER_CLOCK_START needs a time zone: {start!r}")
    offset = begin - datetime.now(UTC)
    log.warning("Scheduler clock starts at %s (offset %s from the system clock)", begin.isoformat(), offset)
    return lambda: datetime.now(UTC) + offset


class TickScheduler(Scheduler):
    """periodiq's Scheduler, sending each tick through a claim (see module docstring)."""

    def __init__(self, actors: list[Any], *, clock: Callable[[], datetime] | None = None,
                 claim_stale_s: float = 60.0) -> None:
        super().__init__(actors=actors)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.claim_stale_s = claim_stale_s
        self.scheduler_id = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # SCHEDULES_ONLY=name,name runs a subset on this scheduler (tests, staged roll-outs).
        only = set(get_settings().schedules_only)
        by_dispatcher = {s.dispatcher: s for s in all_schedules() if not only or s.name in only}
        self.schedules: dict[str, tuple[Schedule, Any]] = {
            a.actor_name: (by_dispatcher[a.actor_name], a) for a in actors if a.actor_name in by_dispatcher}
        self.started_at = self.clock()

    # periodiq calls this with the actors whose cadence validates ``now``.
    def send_actors(self, actors: list[Any], now: Any) -> None:
        tick_at = datetime.fromtimestamp(now.timestamp(), UTC).replace(microsecond=0)
        for actor in actors:
            entry = self.schedules.get(actor.actor_name)
            if entry is not None:
                self.fire(entry[0], entry[1], tick_at, catch_up=False)

    def schedule(self) -> None:
        """One pass: catch up, re-send stale claims, then send what periodiq finds due now."""
        try:
            self.catch_up()
        except Exception:
            log.exception("Catch-up failed; continuing with the regular schedule")
        try:
            self.resend_stale_claims()
        except Exception:
            log.exception("Re-sending stale claimed ticks failed; continuing with the regular schedule")
        now = self.periodiq_now()
        self.send_actors([a for a in self.actors if a.options["periodic"].validate(now)], now=now)

    def periodiq_now(self) -> Any:
        """periodiq's "now" on this scheduler's clock: rounded to the second, half a second
        ahead, so a wake-up that comes a little early still counts for the second it was meant for."""
        return (pendulum.instance(self.clock()) + timedelta(seconds=0.5)).replace(microsecond=0)

    def seconds_to_next(self) -> float:
        """Seconds until the next fire time of any schedule (0 if one is already due)."""
        next_date = min(a.options["periodic"].next_valid_date(self.periodiq_now()) for a in self.actors)
        return max(0.0, (next_date - pendulum.instance(self.clock())).total_seconds())

    def resend_stale_claims(self) -> None:
        """Send the dispatcher of each tick another scheduler claimed and never sent (it died
        in between: without this the tick stays CLAIMED for ever and catch-up counts it done).
        A tick whose dispatcher already ran (linked to it) is only marked ENQUEUED. Should
        the first scheduler still send it after all, the fan-out's per-(tick, tenant)
        message ids keep every tenant run single."""
        by_name = {schedule.name: (schedule, actor) for schedule, actor in self.schedules.values()}
        for stale in reclaim_stale_claims(by_name, self.claim_stale_s, self.scheduler_id):
            schedule, actor = by_name[stale.schedule_name]
            if stale.sent_message_id is not None:
                mark_enqueued(stale.id, stale.sent_message_id)
                log.warning("Tick %s of %s was sent but left CLAIMED; marked ENQUEUED (tick id %d)",
                            stale.tick_at.isoformat(), schedule.name, stale.id)
                continue
            log.error("Tick %s of %s was claimed and never sent (its scheduler died); re-sending it (tick id %d)",
                      stale.tick_at.isoformat(), schedule.name, stale.id)
            self.send_tick(schedule, actor, stale.id, stale.tick_at, catch_up=True)

    def loop(self, stop: threading.Event | None = None) -> None:
        """Run passes until ``stop`` is set. The wait counts on the monotonic clock, so a
        scheduler that was frozen (SIGSTOP, a VM pause) wakes at once and its catch-up
        records the ticks it missed; a failing pass is logged and the loop goes on."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.schedule()
                delay = self.seconds_to_next()
            except Exception:
                log.exception("Scheduler pass failed; retrying in 1 s")
                delay = 1.0
            stop.wait(max(0.05, min(delay, 60.0)))

    def catch_up(self) -> None:
        """Send due ticks that no scheduler sent (within grace); record older ones MISSED."""
        now = self.clock()
        for schedule, actor in self.schedules.values():
            late, recent = plan_catch_up(schedule, last_tick_at(schedule.name), self.started_at, now)
            if late:
                recorded = record_missed(schedule.name, late[-MAX_MISSED_RECORDED:], self.scheduler_id)
                log.error("Schedule %s: %d tick(s) missed beyond the %s grace (last %s)", schedule.name,
                          len(late), schedule.grace, late[-1].isoformat())
                if recorded < len(late):
                    log.error("Schedule %s: only the last %d missed ticks were recorded", schedule.name, recorded)
            for tick_at in recent:
                self.fire(schedule, actor, tick_at, catch_up=tick_at < now.replace(microsecond=0))

    def fire(self, schedule: Schedule, actor: Any, tick_at: datetime, *, catch_up: bool) -> None:
        """Claim the tick; if this scheduler got it, send the dispatcher."""
        tick_id = claim_tick(schedule.name, tick_at, self.scheduler_id, catch_up=catch_up)
        if tick_id is None:
            log.debug("Tick %s of %s already claimed", tick_at.isoformat(), schedule.name)
            return
        self.send_tick(schedule, actor, tick_id, tick_at, catch_up=catch_up)

    def send_tick(self, schedule: Schedule, actor: Any, tick_id: int, tick_at: datetime, *, catch_up: bool) -> None:
        """Send the dispatcher of a tick this scheduler holds the claim of."""
        try:
            message = actor.send_with_options(scheduled_at=tick_at.isoformat(), schedule_tick_id=tick_id,
                                              schedule_name=schedule.name)
            mark_enqueued(tick_id, message.message_id)
            log.info("%s %s tick %s (tick id %d)", "Caught up" if catch_up else "Sent", schedule.name,
                     tick_at.isoformat(), tick_id)
        except Exception as exc:  # one schedule's failure never stops the others
            log.exception("Could not send tick %s of %s", tick_at.isoformat(), schedule.name)
            mark_failed(tick_id, f"{type(exc).__name__}: {exc}")


def heartbeat_forever(broker: Any, scheduler_id: str, interval_s: float = 5.0) -> None:
    key = broker.keys.schedulers
    while True:
        try:
            broker.client.zadd(key, {scheduler_id: time.time() * 1000})
        except Exception as exc:
            log.warning("Scheduler heartbeat failed: %s", exc)
        time.sleep(interval_s)


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM. Installed explicitly: a process started in the
    background by a shell inherits SIGINT *ignored*, and Ctrl-C must still stop it."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("Scheduler stopping (%s)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def run(broker: Any, settings: Any) -> int:
    """The scheduler loop over ``broker``'s periodic actors (``python -m periodic run``);
    returns once SIGINT or SIGTERM arrives (the tick in progress is finished first)."""
    stop = stop_on_signals()
    broker.ping()
    if not settings.schedules_active:
        log.warning("Scheduler %s idle: schedules are disabled (DEV_ENV=1 and SCHEDULES_ENABLED is not set)",
                    os.getpid())
        stop.wait()
        return 0
    scheduler = TickScheduler([a for a in broker.actors.values() if "periodic" in a.options],
                              clock=make_clock(settings.scheduler_clock_start),
                              claim_stale_s=settings.scheduler_claim_stale_s)
    scheduler.actors = [entry[1] for entry in scheduler.schedules.values()]
    threading.Thread(target=heartbeat_forever, args=(broker, scheduler.scheduler_id), daemon=True,
                     name="scheduler-heartbeat").start()
    log.info("Scheduler %s started with %d schedules", scheduler.scheduler_id, len(scheduler.schedules))
    if not scheduler.actors:
        log.warning("Scheduler %s has no schedules to run", scheduler.scheduler_id)
        stop.wait()
        return 0
    scheduler.loop(stop)
    try:  # leave the scheduler registry now, not when the heartbeat times out
        broker.client.zrem(broker.keys.schedulers, scheduler.scheduler_id)
    except Exception as exc:
        log.warning("Could not deregister scheduler %s: %s", scheduler.scheduler_id, exc)
    log.info("Scheduler %s stopped", scheduler.scheduler_id)
    return 0
