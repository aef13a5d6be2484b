"""The seed's CRITICAL rows end to end, for the alerts the other live tests do not drive: a
real Prometheus scrapes the real exporter while a real worker runs. "Huntington transfers
stuck": a batch held PROCESSING by a slow bank (HuntingtonBatchStuck). "Report queue backs
up": requests pile up with no report run (ReportQueueBacklog). "DR auto-approvals stop": the
day's tick was claimed by a scheduler that died before sending it (ScheduleTickUnsent,
CRITICAL from the schedule, and DRAutoApprovalOverdue on the data; SchedulerDown too). Each
fires; then the worker finishes the batch, a report run empties the queue, and a scheduler
started afterwards re-sends the tick, whose DR auto-approval the worker runs: all resolve.
Last, the worker is killed: WorkersDown fires.

Shortened for the test: scrape and evaluation every 1 s, every ``for:`` 2 s, the batch age
threshold 1800 s -> 5 s, a claim is stale after 2 s (SCHEDULER_CLAIM_STALE_S)."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import wait_for
from tests.support.casemgmt_data import tenant_db_session
from tests.support.escrow_seed import add_batch, add_dr, seed_people_and_cases
from tests.support.escrow_services import bank  # noqa: F401 - fixture
from tests.support.escrow_worker import send_for_tenant
from tests.support.ledger import wait_status
from tests.support.metrics_prometheus import (  # noqa: F401
    alerts,
    query,
    shortened_rules,
    start_exporter,
    start_prometheus,
)
from tests.support.smtp_servers import picky_smtp  # noqa: F401 - fixture

pytestmark = pytest.mark.acceptance

MINE = {"HuntingtonBatchStuck", "ReportQueueBacklog", "ScheduleTickUnsent", "DRAutoApprovalOverdue", "SchedulerDown"}
STALE = {"SCHEDULER_CLAIM_STALE_S": "2"}


def _rules(path: Path) -> Path:
    """The production rules, shortened like every live test's, and the batch age to 5 s."""
    rules = yaml.safe_load(shortened_rules(path).read_text())
    [stuck] = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "HuntingtonBatchStuck"]
    assert stuck["expr"].endswith("> 1800")
    stuck["expr"] = stuck["expr"].replace("> 1800", "> 5")
    path.write_text(yaml.safe_dump(rules))
    return path


def _active(url: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in alerts(url):
        if a["labels"]["alertname"] in MINE:
            out.setdefault(a["labels"]["alertname"], []).append({**a["labels"], "state": a["state"]})
    return out


def test_critical_seed_rows_fire_while_a_worker_runs_and_resolve_when_the_work_is_done(
        broker, make_tenants, bank, picky_smtp, start_worker, start_scheduler, start_exporter, start_prometheus,
        tmp_path):
    from actors.escrow.jobs import job_report_generation, process_huntington_batch
    from metrics.domain import dr_overdue_cutoff

    (tenant,) = make_tenants(1)
    session = tenant_db_session(tenant.database_url)
    seeded = seed_people_and_cases(session, dt.date.today())
    batch, _ = add_batch(session, seeded.cases["a"], ["100.00"])
    # Due before the latest 06:00 ET run that is 2 h old: that run should have approved it.
    due = dr_overdue_cutoff(dt.datetime.now(dt.UTC), 7200) - dt.timedelta(hours=1)
    dr = add_dr(session, seeded.cases["b"], seeded.users["ip_b"], "900.00", due)
    worker = start_worker(env={"BANK_GATEWAY_URL": bank.url, "BANK_TIMEOUT": "60", "HTTP_DEADLINE": "60",
                               "SMTP_HOST": picky_smtp.host, "SMTP_PORT": str(picky_smtp.port),
                               "SMTP_TLS": "none"}, threads=4)
    env = {"SCHEDULES_ONLY": "dr_auto_approval", "SCHEDULES_ENABLED": "1", **STALE}
    _, port = start_exporter(env=env)
    _, prom = start_prometheus(f"127.0.0.1:{port}", _rules(tmp_path / "rules.yml"))
    t = str(tenant.id)
    wait_for(lambda: query(prom, f'jobs_huntington_batches_open{{tenant_id="{t}"}}'), 30, what="tenant series")
    wait_for(lambda: set(_active(prom)) <= {"SchedulerDown", "DRAutoApprovalOverdue", "HuntingtonBatchStuck"}, 15,
             what="only the expected start-up state")
    assert "ReportQueueBacklog" not in _active(prom) and "ScheduleTickUnsent" not in _active(prom)

    # --- faults, while the worker runs -------------------------------------------------
    bank.faults("delay=25")  # the bank holds the transfer: the batch stays PROCESSING
    run = send_for_tenant(process_huntington_batch, tenant.id, batch.id)
    for _ in range(60):  # nobody generates reports: the queue backs up
        session.execute(text("INSERT INTO report_requests (user_id, case_id, report_type) "
                             "VALUES (:u, :c, 'case_summary')"), {"u": seeded.users["cm_a"].id,
                                                                  "c": seeded.cases["a"].id})
    session.commit()
    tick_at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    with control_engine().begin() as conn:  # the scheduler died between claiming today's tick and sending it
        conn.execute(text("INSERT INTO schedule_ticks (schedule_name, tick_at, status, scheduler_id, claimed_at) "
                          "VALUES ('dr_auto_approval', :t, 'CLAIMED', 'dead:1:x', now() - interval '1 minute')"),
                     {"t": tick_at})

    def firing() -> dict[str, list[dict[str, Any]]] | None:
        now = {k: [a for a in v if a["state"] == "firing"] for k, v in _active(prom).items()}
        return now if all(now.get(name) for name in MINE) else None

    seen = wait_for(firing, 60, interval=0.5, what=f"{sorted(MINE)} firing (active: {_active(prom)})")
    assert [(a["tenant_id"], a["status"], a["severity"]) for a in seen["HuntingtonBatchStuck"]] == [
        (t, "PROCESSING", "CRITICAL")]
    assert [(a["tenant_id"], a["severity"]) for a in seen["ReportQueueBacklog"]] == [(t, "CRITICAL")]
    assert [(a["schedule"], a["severity"], a["urgency"]) for a in seen["ScheduleTickUnsent"]] == [
        ("dr_auto_approval", "CRITICAL", "page")]
    assert [a["tenant_id"] for a in seen["DRAutoApprovalOverdue"]] == [t]

    # --- the work gets done -------------------------------------------------------------
    assert wait_status(run.message_id, "FINISHED", timeout=60)["resolution"] == "COMPLETED"
    reports = send_for_tenant(job_report_generation, tenant.id)
    assert wait_status(reports.message_id, "FINISHED", timeout=90)["resolution"] == "COMPLETED"
    start_scheduler(only="dr_auto_approval", env=STALE)  # re-sends the stale claim; the worker approves
    wait_for(lambda: session.execute(text("SELECT status FROM disbursement_requests WHERE id = :i"),
                                     {"i": dr.id}).scalar_one() == "APPROVED", 60, what="the re-sent tick's approval")
    session.commit()
    wait_for(lambda: _active(prom) == {}, 60, interval=0.5, what=f"every alert to resolve (active: {_active(prom)})")
    session.close()

    # --- and the worker itself goes: "Huntington transfers stuck" at its root ------------
    worker.kill()
    wait_for(lambda: any(a["labels"]["alertname"] == "WorkersDown" and a["state"] == "firing" for a in alerts(prom)),
             60, interval=0.5, what="WorkersDown firing")
