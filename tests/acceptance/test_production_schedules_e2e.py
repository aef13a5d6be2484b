"""A real production schedule through a real scheduler tick, end to end, one per product
(issue 14, item 10): the scheduler process (``python -m periodic``, SCHEDULES_ONLY=<one
production schedule>) with its clock started 3 s before that schedule's latest fire time
(SCHEDULER_CLOCK_START, DEV_ENV only), so its production cadence fires now; a worker
process runs the production dispatcher and target for the tenants created here. Checked:
the tick row at the cadence's fire time, the dispatcher and the tenant run COMPLETED and
linked to the tick in ``schedule_tick_runs``, and the job's effect in the tenant database."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import wait_for
from tests.support.casemgmt_data import seed_agency, tenant_db_session
from tests.support.escrow_seed import add_dr, seed_people_and_cases
from tests.support.ledger import run_row
from tests.support.smtp_servers import picky_smtp  # noqa: F401 - fixture

pytestmark = pytest.mark.acceptance


def latest_fire_time(schedule_name: str) -> dt.datetime:
    """The production cadence's most recent fire time (its tick fires when the scheduler's
    clock, started 3 s before it, reaches it)."""
    from periodic.schedules import by_name

    now = dt.datetime.now(dt.UTC)
    return by_name(schedule_name).cadence.fire_times_between(now - dt.timedelta(days=8), now)[-1]


def tick_runs(schedule_name: str) -> list[dict[str, Any]]:
    with control_engine().connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT t.id AS tick_id, t.tick_at, t.status, r.role, r.message_id FROM schedule_ticks t "
            "JOIN schedule_tick_runs r ON r.tick_id = t.id WHERE t.schedule_name = :s ORDER BY r.role"),
            {"s": schedule_name}).mappings()]


def run_tick(start_scheduler: Any, schedule_name: str, tenant_runs: int) -> tuple[dt.datetime, dict, list[dict]]:
    """Fire ``schedule_name``'s latest production tick on a real scheduler; wait until its
    dispatcher and ``tenant_runs`` tenant runs are FINISHED; return (fire time, dispatcher
    run, tenant runs)."""
    fire_at = latest_fire_time(schedule_name)
    scheduler = start_scheduler(only=schedule_name, env={
        "SCHEDULER_CLOCK_START": (fire_at - dt.timedelta(seconds=3)).isoformat()})

    def finished() -> list[dict] | None:
        links = tick_runs(schedule_name)
        runs = [(link, run_row(link["message_id"])) for link in links]
        if len(runs) == 1 + tenant_runs and all(r and r["status"] == "FINISHED" for _, r in runs):
            return [{**link, "run": r} for link, r in runs]
        return None

    done = wait_for(finished, 90, interval=0.5, what=f"the {schedule_name} tick's runs to finish")
    scheduler.kill()
    assert "Sent " + schedule_name in scheduler.log, scheduler.log[-2000:]
    [dispatcher] = [d["run"] for d in done if d["role"] == "dispatcher"]
    tenants = [d["run"] for d in done if d["role"] == "tenant"]
    assert {d["tick_at"] for d in done} == {fire_at} and {d["status"] for d in done} == {"ENQUEUED"}
    return fire_at, dispatcher, tenants


def test_escrow_dr_auto_approval_runs_through_a_real_scheduler_tick(broker, make_tenants, picky_smtp, start_worker,
                                                                   start_scheduler):
    from periodic.schedules import by_name

    schedule = by_name("dr_auto_approval")
    (tenant,) = make_tenants(1)
    session = tenant_db_session(tenant.database_url)
    seeded = seed_people_and_cases(session, dt.date.today())
    dr = add_dr(session, seeded.cases["a"], seeded.users["ip_a"], "750.00",
                dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    start_worker(env={"SMTP_HOST": picky_smtp.host, "SMTP_PORT": str(picky_smtp.port), "SMTP_TLS": "none",
                      "SMTP_FROM": "jobs@seedtrust.test"})

    fire_at, dispatcher, [run] = run_tick(start_scheduler, schedule.name, tenant_runs=1)
    assert fire_at.astimezone(ZoneInfo("America/New_York")).time() == dt.time(6, 0)  # the production cron
    assert (dispatcher["actor_name"], dispatcher["resolution"]) == (schedule.dispatcher, "COMPLETED")
    assert (run["actor_name"], run["resolution"], run["tenant_id"]) == (schedule.target, "COMPLETED", tenant.id)
    assert run["result"]["approved"] == 1 and run["result"]["emailed"] == 3
    assert session.execute(text("SELECT status FROM disbursement_requests WHERE id = :i"),
                           {"i": dr.id}).scalar_one() == "APPROVED"
    assert sorted(str(m["To"]) for m in picky_smtp.received()) == [
        "cm_a@seedtrust.test", "ip_a@seedtrust.test", "rep_a@seedtrust.test"]
    session.close()


def test_casemgmt_health_checks_run_through_a_real_scheduler_tick(broker, make_agencies, start_worker,
                                                                 start_scheduler):
    from periodic.schedules import by_name

    schedule = by_name("agency_health_checks")
    agencies = make_agencies(2)
    for agency in agencies:
        session = tenant_db_session(agency.database_url)
        seed_agency(session)
        session.close()
    start_worker()

    _, dispatcher, runs = run_tick(start_scheduler, schedule.name, tenant_runs=2)
    assert (dispatcher["actor_name"], dispatcher["resolution"]) == (schedule.dispatcher, "COMPLETED")
    assert sorted(r["tenant_id"] for r in runs) == sorted(a.id for a in agencies)
    for agency in agencies:
        [run] = [r for r in runs if r["tenant_id"] == agency.id]
        assert (run["actor_name"], run["resolution"]) == (schedule.target, "COMPLETED")
        session = tenant_db_session(agency.database_url)
        stored = session.execute(text("SELECT job_message_id, finished_at IS NOT NULL FROM "
                                      "casemgmt.health_check_runs")).all()
        assert [tuple(r) for r in stored] == [(run["message_id"], True)]  # this tick's run stored its results
        session.close()
