"""The scheduler recovering work as real processes (issue 14, item 7): a tick claimed by a
scheduler that died before sending it is re-sent by a live one (exactly once, exported
while unsent), and a ``period`` schedule's tick missed beyond its grace is still sent
while its period lasts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import wait_for
from tests.support.ledger import count
from tests.support.metrics_scrape import exporter, value
from tests.support.periodic_schedules import SCHEDULES

pytestmark = pytest.mark.acceptance


def ticks(schedule: str) -> list[dict]:
    with control_engine().connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT t.*, (SELECT count(*) FROM schedule_tick_runs r WHERE r.tick_id = t.id AND r.role = 'dispatcher') "
            "AS dispatchers, (SELECT count(*) FROM schedule_tick_runs r JOIN job_runs j USING (message_id) "
            "WHERE r.tick_id = t.id AND r.role = 'tenant' AND j.resolution = 'COMPLETED') AS tenant_runs "
            "FROM schedule_ticks t WHERE schedule_name = :s ORDER BY tick_at"), {"s": schedule}).mappings()]


def _latest_fire(schedule: str) -> datetime:
    """The schedule's newest fire time up to now. A dead claim on it is the only tick due:
    an older one would leave today's fire time to catch-up (MISSED or sent, depending on
    the time of day the suite runs), and the test would see two ticks."""
    [cadence] = [s.cadence for s in SCHEDULES if s.name == schedule]
    now = datetime.now(UTC)
    return cadence.fire_times_between(now - timedelta(days=2), now)[-1]


def _dead_claim(schedule: str, tick_at: datetime, *, dispatcher_message_id: str | None = None) -> int:
    """What a scheduler killed between its claim and its send leaves behind, 5 minutes ago."""
    with control_engine().begin() as conn:
        tick_id = conn.execute(text(
            "INSERT INTO schedule_ticks (schedule_name, tick_at, status, scheduler_id, claimed_at, created_at) "
            "VALUES (:s, :t, 'CLAIMED', 'dead-host:1:abcdef', now() - interval '5 minutes', "
            "now() - interval '5 minutes') RETURNING id"), {"s": schedule, "t": tick_at}).scalar_one()
        if dispatcher_message_id:
            conn.execute(text("INSERT INTO schedule_tick_runs (tick_id, message_id, role) "
                              "VALUES (:i, :m, 'dispatcher')"), {"i": tick_id, "m": dispatcher_message_id})
    return int(tick_id)


def test_a_tick_claimed_by_a_dead_scheduler_is_resent_once_by_the_live_ones(broker, make_tenants, start_worker,
                                                                           start_scheduler):
    make_tenants(2)
    tick_at = _latest_fire("test_daily")
    tick_id = _dead_claim("test_daily", tick_at)
    with exporter() as scrape:  # unsent and visible, before any live scheduler runs
        samples = scrape()
    assert value(samples, "jobs_schedule_unsent_ticks", schedule="test_daily") == 1
    assert value(samples, "jobs_schedule_unsent_oldest_seconds", schedule="test_daily") >= 290

    start_worker("tests.support.tenancy_actors")
    first = start_scheduler(only="test_daily")
    second = start_scheduler(only="test_daily")  # both compete for the stale claim
    wait_for(lambda: ticks("test_daily")[0]["tenant_runs"] == 2, 30, what="the re-sent tick's two tenant runs")
    time.sleep(2)  # both schedulers have made further passes
    assert first.alive() and second.alive()
    [row] = ticks("test_daily")
    assert (row["id"], row["status"], row["reclaims"], row["dispatchers"], row["tenant_runs"]) == (
        tick_id, "ENQUEUED", 1, 1, 2)
    assert row["scheduler_id"] != "dead-host:1:abcdef"
    assert count("SELECT count(*) FROM job_runs WHERE actor_name = 'periodic_test_daily'") == 1
    assert "was claimed and never sent" in first.log + second.log
    with exporter() as scrape:
        samples = scrape()
    assert value(samples, "jobs_schedule_unsent_ticks", schedule="test_daily") == 0
    assert value(samples, "jobs_schedule_resent_ticks_window", schedule="test_daily") == 1


def test_a_claimed_tick_whose_dispatcher_already_ran_is_marked_enqueued_not_sent_again(broker, start_worker,
                                                                                     start_scheduler):
    tick_at = _latest_fire("test_daily")
    tick_id = _dead_claim("test_daily", tick_at, dispatcher_message_id="already-sent-dispatcher")
    scheduler = start_scheduler(only="test_daily")
    wait_for(lambda: ticks("test_daily")[0]["status"] == "ENQUEUED", 20, what="the tick marked ENQUEUED")
    scheduler.kill()
    [row] = ticks("test_daily")
    assert (row["id"], row["dispatchers"]) == (tick_id, 1)
    assert count("SELECT count(*) FROM job_runs WHERE actor_name = 'periodic_test_daily'") == 0


def test_a_period_schedule_sends_its_tick_missed_beyond_grace_while_the_period_lasts(broker, start_worker,
                                                                                   start_scheduler):
    start_worker("tests.support.tenancy_actors")
    only = "test_every_10s_period,test_every_5s_short_grace"
    scheduler = start_scheduler(only=only)
    wait_for(lambda: ticks("test_every_10s_period") and ticks("test_every_5s_short_grace"), 25, what="first ticks")
    scheduler.kill()
    killed_at = time.time()
    # Down across two 10 s ticks at least, back 2-3 s after a tick: the newest missed tick is
    # past its 1 s grace and (with up to 7 s to start) still within its period.
    while not (time.time() - killed_at > 21 and 2.0 <= time.time() % 10 <= 3.0):
        time.sleep(0.05)
    restarted_at = time.time()
    restarted = start_scheduler(only=only)
    wait_for(lambda: any(r["catch_up"] for r in ticks("test_every_10s_period")), 15, what="the period catch-up")
    restarted.kill()

    rows = ticks("test_every_10s_period")
    [caught] = [r for r in rows if r["catch_up"]]
    late_by = (caught["created_at"] - caught["tick_at"]).total_seconds()
    assert 1 < late_by < 10, restarted.log  # beyond the grace, within the period
    assert caught["tick_at"].timestamp() <= restarted_at and caught["status"] == "ENQUEUED"
    assert caught["dispatchers"] == 1
    older = [r for r in rows if killed_at + 1 < r["tick_at"].timestamp() < caught["tick_at"].timestamp()]
    assert older and {r["status"] for r in older} == {"MISSED"}  # only the newest of the outage is sent
    # The grace-only schedule recorded the same outage's ticks MISSED.
    short = [r for r in ticks("test_every_5s_short_grace")
             if killed_at + 1 < r["tick_at"].timestamp() < restarted_at - 1.5]
    assert short and {r["status"] for r in short} == {"MISSED"}
    wait_for(lambda: count("SELECT count(*) FROM job_runs j JOIN schedule_tick_runs r USING (message_id) "
                           "WHERE r.tick_id = :t AND j.resolution = 'COMPLETED'", t=caught["id"]) >= 1, 20,
             what="the caught-up tick's dispatcher run")
