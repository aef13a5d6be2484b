"""The seven per-tenant escrow jobs end to end: fanned out to the escrow tenants, run by a
real ``dramatiq actors`` worker through ``tenancy.session``, against real SMTP, moto S3
and HTTP servers; then fanned out again to show that a second round has no second effect."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import boto3
import pytest

from tests.support.escrow_seed import add_dr, seed_people_and_cases
from tests.support.escrow_services import (  # noqa: F401 - fixtures
    escrow_tenant_db,
    http_stub,
    moto_s3,
    smtp_server,
    tenant,
)
from tests.support.escrow_worker import control_db, escrow_tenant  # noqa: F401 - fixtures
from tests.support.ledger import wait_status

pytestmark = pytest.mark.integration

JOBS = ("job_dr_approval", "job_case_close_reminders", "job_account_balance_check", "job_account_balance_reminders",
        "job_report_generation", "job_aws_status_check", "job_user_offsite_tracking")


def test_all_tenant_jobs_run_in_a_worker_through_the_fan_out_and_a_second_round_has_no_effect(
        escrow_tenant, tenant, smtp_server, moto_s3, http_stub, start_worker):
    from tenancy.fanout import fan_out

    today = dt.datetime.now(ZoneInfo("America/New_York")).date()
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, today)
        dr = add_dr(s, seeded.cases["a"], seeded.users["ip_a"], "700.00",
                    dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    tenant.execute("INSERT INTO report_requests (user_id, case_id, report_type) VALUES (:u, :c, 'case_summary')",
                   u=seeded.users["cm_b"].id, c=seeded.cases["b"].id)
    boto3.client("s3", region_name="us-east-1", endpoint_url=moto_s3).create_bucket(Bucket="st-status")
    start_worker(env={"SMTP_HOST": smtp_server.host, "SMTP_PORT": str(smtp_server.port), "SMTP_TLS": "none",
                      "SMTP_FROM": "jobs@seedtrust.test", "S3_ENDPOINT_URL": moto_s3, "S3_BUCKET": "st-status",
                      "CLOUDFRONT_URL": f"{http_stub.url}/cdn/ping", "INTERNAL_API_URL": f"{http_stub.url}/status",
                      "INTERNAL_API_KEY": "k-1"}, threads=4)

    def round_() -> None:
        messages = [m for job in JOBS for m in fan_out(job, product="escrow")]
        assert len(messages) == len(JOBS)  # one escrow tenant
        for m in messages:
            row = wait_status(m.message_id, "FINISHED", timeout=60)
            assert row["resolution"] == "COMPLETED", (m.actor_name, row)
            assert row["tenant_id"] == escrow_tenant.id

    round_()
    assert tenant.scalar("SELECT status FROM disbursement_requests WHERE id = :i", i=dr.id) == "APPROVED"
    assert tenant.scalar("SELECT count(*) FROM close_reminders WHERE close_date = :d", d=today) == 1
    assert tenant.scalar("SELECT count(*) FROM balance_alerts WHERE check_date = :d", d=today) == 1
    assert tenant.scalar("SELECT status FROM report_requests") == 3
    assert tenant.scalar("SELECT count(*) FROM users WHERE on_site") == 0
    assert tenant.rows("SELECT s3_ok, cloudfront_ok, posted FROM status_checks") == [(True, True, True)]
    subjects = sorted(m.message["Subject"] for m in smtp_server.received())
    # 3 DR approval notices + 1 close reminder + 3 balance reminders + 1 report
    assert len(subjects) == 8, subjects
    assert "Case ST-1001 is scheduled to close today" in subjects
    assert "Your report #1 (case_summary)" in subjects
    posts = [r for r in http_stub.requests if r["method"] == "POST"]
    assert posts[0]["headers"]["X-Internal-Api-Key"] == "k-1" and posts[0]["json"]["tenant_id"] == escrow_tenant.id

    round_()  # the same jobs again: no second approval, reminder, alert, report or e-mail
    assert len(smtp_server.received()) == 8
    assert tenant.scalar("SELECT count(*) FROM notifications") == 7
    assert tenant.scalar("SELECT count(*) FROM balance_alerts") == 1
    assert tenant.scalar("SELECT version FROM disbursement_requests WHERE id = :i", i=dr.id) == 2


def test_a_failed_report_is_recorded_on_the_request_and_as_an_error_run(escrow_tenant, tenant, smtp_server,
                                                                        start_worker):
    from actors.escrow.jobs import job_report_generation
    from tests.support.escrow_worker import send_for_tenant
    from tests.support.ledger import error_rows

    with tenant.session() as s:
        seeded = seed_people_and_cases(s, dt.date(2026, 11, 23))
    tenant.execute("INSERT INTO report_requests (user_id, report_type) VALUES (:u, 'no_such_report')",
                   u=seeded.users["cm_a"].id)
    start_worker(env={"SMTP_HOST": smtp_server.host, "SMTP_PORT": str(smtp_server.port), "SMTP_TLS": "none"})
    msg = send_for_tenant(job_report_generation, escrow_tenant.id, max_retries=0)
    row = wait_status(msg.message_id, "FINISHED", timeout=30)
    assert row["resolution"] == "ERROR"
    (err,) = error_rows(msg.message_id)
    assert "ReportsFailed" in str(err) and "[1]" in str(err)
    status, error = tenant.rows("SELECT status, last_error FROM report_requests")[0]
    assert status == 1 and "unknown report type 'no_such_report'" in error
    assert smtp_server.received() == []
