"""Report requests across an SMTP outage (issue 14, item 2): a real aiosmtpd server is stopped
for several runs (and the broker's own retries of each), then started again on the same port.
No request may fail for good; all go out once SMTP is back."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt

import pytest

from actors.escrow.reports import ReportServiceDown, process_reports
from tests.support.escrow_seed import seed_people_and_cases
from tests.support.escrow_services import (  # noqa: F401 - fixtures
    escrow_tenant_db,
    restartable_smtp,
    smtp_sender,
    tenant,
)
from tests.support.escrow_worker import control_db, escrow_tenant, send_for_tenant  # noqa: F401 - fixtures
from tests.support.ledger import error_rows, wait_status

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 11, 23)


def _requests(tenant, n: int) -> None:
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
    for i in range(n):
        tenant.execute("INSERT INTO report_requests (user_id, case_id, report_type, created_at) "
                       "VALUES (:u, :c, 'case_summary', now() - make_interval(mins => :age))",
                       u=seeded.users["cm_a"].id, c=seeded.cases["a"].id, age=n - i)


def _queue(tenant) -> list[tuple[int, int]]:
    return [tuple(r) for r in tenant.rows("SELECT status, attempts FROM report_requests ORDER BY id")]


def test_an_smtp_outage_over_many_runs_fails_no_request_and_all_go_out_after(tenant, restartable_smtp):
    _requests(tenant, 3)
    restartable_smtp.stop()
    for _ in range(6):  # six runs while the server is down: minutes of outage, or a run and its retries
        with tenant.session() as s, pytest.raises(ReportServiceDown):
            process_reports(s, smtp_sender(restartable_smtp))
    assert _queue(tenant) == [(1, 0)] * 3  # pending, no attempt charged
    restartable_smtp.start()
    with tenant.session() as s:
        run = process_reports(s, smtp_sender(restartable_smtp))
    assert run.emailed == [1, 2, 3]
    assert _queue(tenant) == [(3, 1)] * 3
    assert sorted(m.message["Subject"] for m in restartable_smtp.received()) == [
        f"Your report #{i} (case_summary)" for i in (1, 2, 3)]


def test_worker_runs_and_their_broker_retries_during_an_smtp_outage_fail_no_request(
        escrow_tenant, tenant, restartable_smtp, start_worker):
    """The issue's case: each scheduled run is retried by the broker (2 s, 4 s), so a short
    blip used to spend all 3 attempts of every claimed request (status 4, never sent)."""
    from actors.escrow.jobs import job_report_generation

    _requests(tenant, 3)
    start_worker(env={"SMTP_HOST": restartable_smtp.host, "SMTP_PORT": str(restartable_smtp.port),
                      "SMTP_TLS": "none", "SMTP_TIMEOUT": "3"})
    restartable_smtp.stop()
    runs = [send_for_tenant(job_report_generation, escrow_tenant.id) for _ in range(2)]
    for msg in runs:
        row = wait_status(msg.message_id, "FINISHED", timeout=60)
        assert row["resolution"] == "ERROR" and row["attempts"] == 3  # the run and its two broker retries
        assert {e["exception_type"].rsplit(".", 1)[-1] for e in error_rows(msg.message_id)} == {"ReportServiceDown"}
    assert _queue(tenant) == [(1, 0)] * 3
    restartable_smtp.start()
    row = wait_status(send_for_tenant(job_report_generation, escrow_tenant.id).message_id, "FINISHED", timeout=60)
    assert row["resolution"] == "COMPLETED" and row["result"]["emailed"] == [1, 2, 3]
    assert _queue(tenant) == [(3, 1)] * 3
    assert len(restartable_smtp.received()) == 3


def test_a_request_that_failed_for_good_is_requeued_by_the_operator_command_and_the_actor(
        escrow_tenant, tenant, restartable_smtp, start_worker):
    """Charged failures (the request's own) back off on the row; after the last one the
    request is status 4 until an operator requeues it (CLI function, or the actor)."""
    from actors.escrow.jobs import job_report_generation, requeue_failed_report_requests
    from actors.escrow.operator import requeue_failed_report_requests as requeue_command

    _requests(tenant, 2)
    tenant.execute("UPDATE report_requests SET report_type = 'retired_type'")
    start_worker(env={"SMTP_HOST": restartable_smtp.host, "SMTP_PORT": str(restartable_smtp.port),
                      "SMTP_TLS": "none", "REPORT_RETRY_BACKOFF_S": "0"})
    msg = send_for_tenant(job_report_generation, escrow_tenant.id)  # the run and its 2 retries: 3 attempts
    assert wait_status(msg.message_id, "FINISHED", timeout=60)["resolution"] == "ERROR"
    assert _queue(tenant) == [(4, 3)] * 2
    assert "retired_type" in tenant.scalar("SELECT last_error FROM report_requests WHERE id = 1")

    tenant.execute("UPDATE report_requests SET report_type = 'case_summary' WHERE id = 1")  # the cause fixed
    assert requeue_command(escrow_tenant.id, operator="ops-carol", request_ids=[1]) == {
        "tenant_id": escrow_tenant.id, "requeued": [1]}
    assert _queue(tenant) == [(1, 0), (4, 3)]
    assert tenant.scalar("SELECT last_error FROM report_requests WHERE id = 1").startswith("[requeued by ops-carol]")
    row = wait_status(send_for_tenant(job_report_generation, escrow_tenant.id).message_id, "FINISHED", timeout=60)
    assert row["resolution"] == "COMPLETED" and row["result"]["emailed"] == [1]
    run = send_for_tenant(requeue_failed_report_requests, escrow_tenant.id, "ops-carol")  # all the rest
    assert wait_status(run.message_id, "FINISHED", timeout=30)["result"] == {"requeued": [2]}
    assert _queue(tenant) == [(3, 1), (1, 0)]
