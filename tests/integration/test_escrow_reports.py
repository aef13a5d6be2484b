"""Report queue (status 1 -> 2 -> 3) on a migrated tenant database with a real SMTP server."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from actors.escrow.reports import ReportsFailed, claim_next, complete, process_reports
from tests.support.escrow_seed import add_dr, seed_people_and_cases
from tests.support.escrow_services import (  # noqa: F401 - fixtures
    escrow_tenant_db,
    run_concurrently,
    smtp_sender,
    smtp_server,
    tenant,
)

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 11, 23)


def _seed(tenant, n_requests: int = 2):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        add_dr(s, seeded.cases["a"], seeded.users["ip_a"], "1500.00", None, payee="Clinic A")
        add_dr(s, seeded.cases["a"], seeded.users["ip_a"], "250.50", None, payee="Agency B", status="APPROVED")
    cm = seeded.users["cm_a"].id
    for i in range(n_requests):
        tenant.execute("INSERT INTO report_requests (user_id, case_id, report_type, created_at) "
                       "VALUES (:u, :c, 'case_summary', now() - make_interval(mins => :age))",
                       u=cm, c=seeded.cases["a"].id, age=n_requests - i)
    return seeded


def test_report_is_generated_from_case_data_and_emailed_as_csv_attachment(tenant, smtp_server):
    _seed(tenant, n_requests=1)
    with tenant.session() as s:
        run = process_reports(s, smtp_sender(smtp_server))
    assert run.emailed == [1]
    row = tenant.rows("SELECT status, file_name, completed_at IS NOT NULL, lease_until FROM report_requests")[0]
    assert tuple(row) == (3, "case-1-report.csv", True, None)
    (mail,) = smtp_server.received()
    assert mail.rcpt_tos == ["cm_a@seedtrust.test"]
    assert mail.message["Subject"] == "Your report #1 (case_summary)"
    (attachment,) = list(mail.message.iter_attachments())
    assert attachment.get_filename() == "case-1-report.csv" and attachment.get_content_type() == "text/csv"
    content = attachment.get_content()
    rows = list(csv.DictReader(io.StringIO(content if isinstance(content, str) else content.decode())))
    assert [(r["case_number"], r["payee"], r["amount"], r["dr_status"]) for r in rows] == [
        ("ST-1001", "Clinic A", "1500.00", "PENDING"), ("ST-1001", "Agency B", "250.50", "APPROVED")]
    assert rows[0]["balance"] == "5000.00"


def test_reports_are_processed_oldest_first(tenant, smtp_server):
    _seed(tenant, n_requests=3)
    with tenant.session() as s:
        run = process_reports(s, smtp_sender(smtp_server))
    assert run.emailed == [1, 2, 3]
    assert [m.message["Subject"] for m in smtp_server.received()] == [
        f"Your report #{i} (case_summary)" for i in (1, 2, 3)]


def test_report_run_twice_and_concurrently_emails_each_report_once(tenant, smtp_server):
    _seed(tenant, n_requests=6)

    def run(_: int):
        with tenant.session() as s:
            return process_reports(s, smtp_sender(smtp_server))

    results = run_concurrently(3, run) + [run(0)]
    emailed = [i for r in results for i in r.emailed]
    assert sorted(emailed) == [1, 2, 3, 4, 5, 6]
    assert len(smtp_server.received()) == 6
    assert tenant.scalar("SELECT count(*) FROM report_requests WHERE status = 3 AND attempts = 1") == 6


def test_report_failure_is_recorded_on_the_request_and_raised(tenant, smtp_server):
    _seed(tenant, n_requests=1)
    tenant.execute("INSERT INTO report_requests (user_id, report_type) VALUES (1, 'no_such_report')")
    with tenant.session() as s, pytest.raises(ReportsFailed, match=r"\[2\]"):
        process_reports(s, smtp_sender(smtp_server))
    bad = tenant.rows("SELECT status, attempts, last_error, next_attempt_at > now() FROM report_requests "
                      "WHERE id = 2")[0]
    assert bad[0] == 1 and bad[1] == 1 and "unknown report type 'no_such_report'" in bad[2]  # back for retry ...
    assert bad[3] is True  # ... after its back-off
    assert tenant.scalar("SELECT status FROM report_requests WHERE id = 1") == 3  # the good one still went out
    with tenant.session() as s:  # a run straight after (a broker retry, the next minute) does not touch it
        assert process_reports(s, smtp_sender(smtp_server)).emailed == []
    assert tenant.scalar("SELECT attempts FROM report_requests WHERE id = 2") == 1
    for _ in range(2):
        tenant.execute("UPDATE report_requests SET next_attempt_at = now() WHERE id = 2")  # the back-off passed
        with tenant.session() as s, pytest.raises(ReportsFailed):
            process_reports(s, smtp_sender(smtp_server))
    row = tenant.rows("SELECT status, failed_at IS NOT NULL, next_attempt_at FROM report_requests WHERE id = 2")[0]
    assert tuple(row) == (4, True, None)  # failed for good after 3 charged attempts


def test_smtp_down_fails_the_run_and_keeps_the_report_queued_without_charging_it(tenant):
    from actors.escrow.mail import SmtpSender
    from actors.escrow.reports import ReportServiceDown
    from tests.support.chaos import free_port

    _seed(tenant, n_requests=2)
    with tenant.session() as s, pytest.raises(ReportServiceDown):
        process_reports(s, SmtpSender(host="127.0.0.1", port=free_port(), sender="x@y", timeout=2))
    rows = tenant.rows("SELECT status, attempts, last_error, next_attempt_at FROM report_requests ORDER BY id")
    assert rows[0][:2] == (1, 0) and "MailUnavailable" in rows[0][2] and rows[0][3] is None  # not charged, not delayed
    assert tuple(rows[1][:3]) == (1, 0, None)  # the run stopped: the server is down for everyone


def test_expired_lease_is_reclaimed_and_the_old_owner_cannot_complete(tenant, smtp_server):
    _seed(tenant, n_requests=1)
    with tenant.session() as s:
        stale = claim_next(s, lease=dt.timedelta(seconds=30))
        assert stale is not None and claim_next(s) is None  # leased: nobody else gets it
        tenant.execute("UPDATE report_requests SET lease_until = now() - interval '1 second'")  # worker died
        run = process_reports(s, smtp_sender(smtp_server))
        assert run.emailed == [stale.id]
        assert complete(s, stale, "late.csv") is False  # fenced by the claim token
    row = tenant.rows("SELECT status, attempts, file_name FROM report_requests")[0]
    assert tuple(row) == (3, 2, "case-1-report.csv")
    assert len(smtp_server.received()) == 1


def test_eight_concurrent_claimers_over_2000_requests_never_double_claim(tenant):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
    tenant.execute("INSERT INTO report_requests (user_id, case_id, report_type, created_at) "
                   "SELECT :u, :c, 'case_summary', now() - make_interval(secs => 2001 - g) "
                   "FROM generate_series(1, 2000) g", u=seeded.users["cm_a"].id, c=seeded.cases["a"].id)

    def claimer(_: int) -> list[int]:
        got: list[int] = []
        with tenant.session() as s:
            while (claim := claim_next(s)) is not None:
                got.append(claim.id)
                assert complete(s, claim, "x.csv")
        return got

    results = run_concurrently(8, claimer)
    claimed = [i for r in results for i in r]
    assert len(claimed) == 2000 and len(set(claimed)) == 2000  # 0 double claims, none missed
    assert sum(1 for r in results if r) >= 2  # the claimers really ran side by side
    assert tenant.scalar("SELECT count(*) FROM report_requests WHERE status = 3 AND attempts = 1") == 2000
