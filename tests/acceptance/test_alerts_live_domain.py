"""The CRITICAL data-level alerts of issue 14 end to end: a real Prometheus scrapes the real
exporter, which reads a real escrow tenant database, while a real worker runs the jobs against
the bank simulator and an SMTP server. The failures are produced by the worker (a bank 503,
a report that fails each attempt) or left in the data (a request the daily run should have
approved); each alert reaches ``firing`` in Prometheus, and the Huntington and DR ones resolve
once the worker (via the operator command, and the next approval run) has done the work.

Shortened for the test (tests/support/metrics_prometheus.py): scrape and evaluation every 1 s,
every ``for:`` 2 s; report back-off 0 s so the broker's retries spend the attempts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.conftest import wait_for

# Fixtures of these areas are imported (tests/conftest.py is the lead's): ruff sees parameters redefining them.
# ruff: noqa: F811
from tests.support.escrow_seed import add_batch, add_dr, seed_people_and_cases
from tests.support.escrow_services import bank, escrow_tenant_db, smtp_server, tenant  # noqa: F401
from tests.support.escrow_worker import control_db, escrow_tenant, send_for_tenant  # noqa: F401
from tests.support.ledger import wait_status
from tests.support.metrics_prometheus import (  # noqa: F401
    alerts,
    query,
    shortened_rules,
    start_exporter,
    start_prometheus,
)

pytestmark = pytest.mark.acceptance

MINE = {"HuntingtonTransfersFailed", "ReportRequestsFailed", "DRAutoApprovalOverdue"}


def _active(url: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in alerts(url):
        if a["labels"]["alertname"] in MINE:
            out.setdefault(a["labels"]["alertname"], []).append({**a["labels"], "state": a["state"]})
    return out


def test_critical_domain_alerts_fire_on_worker_failures_and_resolve_after_the_fix(
        escrow_tenant, tenant, bank, smtp_server, start_worker, start_exporter, start_prometheus, tmp_path):
    from actors.escrow.jobs import job_dr_approval, job_report_generation, process_huntington_batch
    from actors.escrow.operator import resend_huntington_batch

    with tenant.session() as s:
        seeded = seed_people_and_cases(s, dt.date.today())
        batch, items = add_batch(s, seeded.cases["a"], ["100.00", "200.00"])
    start_worker(env={"BANK_GATEWAY_URL": bank.url, "BANK_TIMEOUT": "5", "SMTP_HOST": smtp_server.host,
                      "SMTP_TLS": "none", "SMTP_PORT": str(smtp_server.port), "REPORT_RETRY_BACKOFF_S": "0"},
                 threads=4)
    _, port = start_exporter()
    _, prom = start_prometheus(f"127.0.0.1:{port}", shortened_rules(tmp_path / "rules.yml"))
    t = str(escrow_tenant.id)

    # --- healthy: the tenant's series are scraped, none of these alerts is pending or firing
    wait_for(lambda: query(prom, f'jobs_huntington_items_failed{{tenant_id="{t}"}}'), 30,
             what="the tenant's domain series in Prometheus")
    assert _active(prom) == {}

    # --- faults, made by the worker or left in the data
    bank.faults("error=503")  # item 1 refused with a 503: FAILED, not sent
    run = send_for_tenant(process_huntington_batch, escrow_tenant.id, batch.id)
    assert wait_status(run.message_id, "FINISHED", timeout=60)["resolution"] == "ERROR"
    tenant.execute("INSERT INTO report_requests (user_id, report_type) VALUES (:u, 'retired_type')",
                   u=seeded.users["cm_a"].id)
    reports = send_for_tenant(job_report_generation, escrow_tenant.id)  # the run and 2 retries: 3 attempts
    assert wait_status(reports.message_id, "FINISHED", timeout=60)["resolution"] == "ERROR"
    with tenant.session() as s:  # due three days ago, never approved: the daily run did not do its work
        dr = add_dr(s, seeded.cases["b"], seeded.users["ip_b"], "900.00",
                    dt.datetime.now(dt.UTC) - dt.timedelta(days=3))

    def firing() -> dict[str, list[dict[str, Any]]] | None:
        now = {k: [a for a in v if a["state"] == "firing"] for k, v in _active(prom).items()}
        return now if all(now.get(name) for name in MINE) else None

    seen = wait_for(firing, 60, interval=0.5, what=f"{sorted(MINE)} firing (active: {_active(prom)})")
    [failed] = seen["HuntingtonTransfersFailed"]
    assert (failed["tenant_id"], failed["kind"], failed["severity"], failed["urgency"]) == (t, "not_sent",
                                                                                          "CRITICAL", "page")
    assert [a["tenant_id"] for a in seen["ReportRequestsFailed"]] == [t]
    assert [a["tenant_id"] for a in seen["DRAutoApprovalOverdue"]] == [t]

    # --- the fixes, done by the worker: the operator re-send, the next approval run
    out = resend_huntington_batch(escrow_tenant.id, batch.id, operator="ops-live")
    assert wait_status(out["message_id"], "FINISHED", timeout=60)["resolution"] == "COMPLETED"
    approval = send_for_tenant(job_dr_approval, escrow_tenant.id)
    assert wait_status(approval.message_id, "FINISHED", timeout=60)["resolution"] == "COMPLETED"
    assert tenant.scalar("SELECT status FROM disbursement_requests WHERE id = :i", i=dr.id) == "APPROVED"
    wait_for(lambda: set(_active(prom)) == {"ReportRequestsFailed"}, 60, interval=0.5,
             what=f"the Huntington and DR alerts to resolve (active: {_active(prom)})")
    assert len(bank.stats()["transfers"]) == len(items)
