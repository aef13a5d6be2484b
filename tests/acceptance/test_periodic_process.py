"""The scheduler as real processes: no double fire, catch-up, missed ticks, late messages."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage
from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import wait_for
from tests.support.ledger import count, wait_status

pytestmark = pytest.mark.acceptance


def ticks(schedule: str) -> list[dict]:
    with control_engine().connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT t.*, (SELECT count(*) FROM schedule_tick_runs r WHERE r.tick_id = t.id AND r.role = 'dispatcher') "
            "AS dispatchers FROM schedule_ticks t WHERE schedule_name = :s ORDER BY tick_at"),
            {"s": schedule}).mappings()]


def test_two_schedulers_enqueue_each_tick_exactly_once(broker, start_worker, start_scheduler):
    start_worker("tests.support.tenancy_actors")
    first = start_scheduler(only="test_every_2s")
    second = start_scheduler(only="test_every_2s")
    time.sleep(9)
    assert first.alive() and second.alive()  # both competed for every tick of the window
    first.kill()
    second.kill()
    rows = ticks("test_every_2s")
    assert len(rows) >= 3
    assert len({r["tick_at"] for r in rows}) == len(rows)
    assert {r["status"] for r in rows} == {"ENQUEUED"}
    assert all(r["dispatchers"] == 1 for r in rows)
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE actor_name = 'periodic_test_every_2s' "
                           "AND resolution = 'COMPLETED'") == len(rows), 20, what="every tick's dispatcher run")
    assert count("SELECT count(*) FROM job_runs WHERE actor_name = 'periodic_test_every_2s'") == len(rows)
    # Both really competed: each logged at least one tick claimed by the other or its own.
    assert "Sent test_every_2s" in first.log + second.log


def test_restarted_scheduler_catches_up_once_within_grace_and_records_missed_beyond(
        broker, start_worker, start_scheduler):
    start_worker("tests.support.tenancy_actors")
    only = "test_every_5s,test_every_5s_short_grace"
    scheduler = start_scheduler(only=only)
    wait_for(lambda: ticks("test_every_5s") and ticks("test_every_5s_short_grace"), 15, what="a first tick")
    scheduler.kill()
    killed_at = datetime.now(UTC)
    last = ticks("test_every_5s")[-1]["tick_at"]
    # Stay down across at least one whole tick period after the kill (plus margins), then
    # come back.
    while datetime.now(UTC) < max(last + timedelta(seconds=8), killed_at + timedelta(seconds=8.5)):
        time.sleep(0.2)
    down_for = (datetime.now(UTC) - killed_at).total_seconds()
    restarted = start_scheduler(only=only)
    wait_for(lambda: any(r["catch_up"] for r in ticks("test_every_5s")), 10, what="a catch-up tick")
    time.sleep(1)
    restarted.kill()

    caught = [r for r in ticks("test_every_5s") if r["catch_up"]]
    assert len(caught) >= 1 and all(r["dispatchers"] == 1 and r["status"] == "ENQUEUED" for r in caught)
    # periodiq wakes up to 0.5 s before a tick and claims it under its nominal time, so a
    # tick up to 1 s after the kill may still be the dead scheduler's own.
    missed_while_down = [r for r in ticks("test_every_5s") if killed_at + timedelta(seconds=1) < r["tick_at"]
                         < killed_at + timedelta(seconds=down_for)]
    assert missed_while_down and all(r["catch_up"] for r in missed_while_down)
    # The 1 s grace schedule: the ticks that fell in the outage are recorded MISSED, not run.
    short = [r for r in ticks("test_every_5s_short_grace") if killed_at + timedelta(seconds=1) < r["tick_at"]
             < killed_at + timedelta(seconds=down_for - 1.5)]
    assert short and {r["status"] for r in short} == {"MISSED"} and all(r["dispatchers"] == 0 for r in short)
    assert "missed beyond the" in restarted.log


@pytest.mark.parametrize(("schedule", "late"), [("test_every_2s", timedelta(seconds=90)),
                                                 ("test_daily", timedelta(hours=3))])
def test_a_periodic_message_delivered_late_after_its_tick_still_runs_once(broker, start_worker, make_tenants,
                                                                         schedule, late):
    """90 s (periodiq would skip it after 30 s); 3 h for a daily tick (past the platform's
    default one-hour max_age, which would expire it)."""
    from periodiq import PeriodiqMiddleware

    from periodic.ticks import claim_tick

    make_tenants(2)
    tick_at = (datetime.now(UTC) - late).replace(microsecond=0)
    tick_id = claim_tick(schedule, tick_at, "test")
    message = Message(queue_name="periodic", actor_name=f"periodic_{schedule}", args=(), kwargs={},
                      options={"scheduled_at": tick_at.isoformat(), "schedule_tick_id": tick_id},
                      message_timestamp=int(tick_at.timestamp() * 1000))
    # periodiq's own middleware would ack and drop it (skip_delay=30):
    with pytest.raises(SkipMessage):
        PeriodiqMiddleware().before_process_message(broker, MessageProxy(message))
    broker.enqueue(message)
    worker = start_worker("tests.support.tenancy_actors")
    row = wait_status(message.message_id, "FINISHED")
    assert (row["resolution"], row["attempts"]) == ("COMPLETED", 1)
    logged = re.search(r"Running periodic_\w+ for its tick \S+, (\d+) s late", worker.log)
    assert logged and int(logged.group(1)) >= late.total_seconds()
    # ... and fanned out once to each tenant, every tenant run linked to the tick.
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE actor_name = 'TENANT_PROBE' "
                           "AND resolution = 'COMPLETED'") == 2, 20, what="both tenant runs")
    assert count("SELECT count(*) FROM schedule_tick_runs r JOIN job_runs j USING (message_id) "
                 "WHERE r.tick_id = :t AND r.role = 'tenant'", t=tick_id) == 2


def test_a_tick_whose_target_actor_is_missing_is_failed_and_the_scheduler_goes_on(
        broker, start_worker, start_scheduler):
    start_worker("tests.support.tenancy_actors")
    scheduler = start_scheduler(only="test_missing_target,test_every_2s")
    wait_for(lambda: len([r for r in ticks("test_missing_target") if r["status"] == "FAILED"]) >= 2, 20,
             what="two FAILED ticks of the schedule with a missing target")
    # The scheduler survived it and keeps sending the other schedule, whose runs complete.
    before = len(ticks("test_every_2s"))
    wait_for(lambda: len(ticks("test_every_2s")) >= before + 2, 10, what="further ticks of the healthy schedule")
    assert scheduler.alive()
    scheduler.kill()
    failed = [r for r in ticks("test_missing_target") if r["status"] == "FAILED"]
    assert all("'NO_SUCH_ACTOR' is not declared" in r["error"] and r["dispatchers"] == 1 for r in failed), failed
    # Each failed tick is one ERROR dispatcher run, attempted once (UnknownActor is not retried).
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE actor_name = 'periodic_test_missing_target' "
                           "AND resolution = 'ERROR'") >= len(failed), 10, what="the dispatcher ERROR runs")
    assert count("SELECT count(*) FROM job_runs WHERE actor_name = 'periodic_test_missing_target' "
                 "AND attempts > 1") == 0
    assert count("SELECT count(*) FROM job_runs WHERE actor_name = 'periodic_test_every_2s' "
                 "AND resolution = 'COMPLETED'") >= 2


def test_schedules_do_not_fire_in_development_unless_enabled(broker, start_worker, start_scheduler):
    start_worker("tests.support.tenancy_actors")
    idle = start_scheduler(only="test_every_2s", env={"DEV_ENV": "1", "SCHEDULES_ENABLED": "0"})
    time.sleep(5)
    assert idle.alive() and "schedules are disabled" in idle.log
    assert ticks("test_every_2s") == []
    idle.kill()
    enabled = start_scheduler(only="test_every_2s", env={"DEV_ENV": "1", "SCHEDULES_ENABLED": "1"})
    wait_for(lambda: ticks("test_every_2s"), 10, what="a tick once SCHEDULES_ENABLED=1")
    enabled.kill()
