"""Escrow daily/periodic jobs on a migrated tenant database with a real SMTP server:
DR auto-approval, case close reminders, balance check, balance reminders, off-site tracking."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from actors.escrow.balance import check_minimum_balances
from actors.escrow.dr_approval import approve_due_requests
from actors.escrow.offsite import mark_users_offsite
from actors.escrow.reminders import send_balance_reminders, send_close_reminders
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
NOW = dt.datetime(2026, 11, 23, 11, 0, tzinfo=dt.UTC)  # 06:00 ET


def _seed_drs(tenant):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        a, b = seeded.cases["a"], seeded.cases["b"]
        ip = seeded.users["ip_a"]
        drs = {
            "due_a": add_dr(s, a, ip, "1500.00", NOW - dt.timedelta(hours=1)),
            "future": add_dr(s, a, ip, "200.00", NOW + dt.timedelta(days=1)),
            "manual": add_dr(s, a, ip, "300.00", None),
            "due_b": add_dr(s, b, seeded.users["ip_b"], "900.00", NOW - dt.timedelta(days=2)),
            "rejected": add_dr(s, a, ip, "50.00", NOW - dt.timedelta(days=1), status="REJECTED"),
        }
    return seeded, drs


# -- DR auto-approval ---------------------------------------------------------------------------
def test_dr_approval_approves_expired_windows_and_emails_ips_reps_and_case_managers(tenant, smtp_server):
    seeded, drs = _seed_drs(tenant)
    with tenant.session() as s:
        result = approve_due_requests(s, smtp_sender(smtp_server), now=NOW)
    assert sorted(result.approved) == sorted([drs["due_a"].id, drs["due_b"].id])
    statuses = dict(tenant.rows("SELECT id, status FROM disbursement_requests"))
    assert statuses[drs["due_a"].id] == statuses[drs["due_b"].id] == "APPROVED"
    assert statuses[drs["future"].id] == statuses[drs["manual"].id] == "PENDING"
    assert statuses[drs["rejected"].id] == "REJECTED"
    assert tenant.scalar("SELECT version FROM disbursement_requests WHERE id = :i", i=drs["due_a"].id) == 2
    mails = smtp_server.received()
    by_rcpt = {m.rcpt_tos[0]: m for m in mails}
    assert sorted(by_rcpt) == sorted(f"{u}@seedtrust.test" for u in ("ip_a", "rep_a", "cm_a", "ip_b", "rep_b",
                                                                     "cm_b"))
    assert len(mails) == 6  # not the Escrow Specialists, not the inactive Case Manager
    assert by_rcpt["cm_a@seedtrust.test"].message["Subject"] == (
        f"Disbursement request #{drs['due_a'].id} approved (case ST-1001)")
    assert tenant.scalar("SELECT count(*) FROM notifications WHERE status = 'SENT'") == 6


def test_dr_approval_run_twice_approves_and_emails_once(tenant, smtp_server):
    _seed_drs(tenant)
    with tenant.session() as s:
        first = approve_due_requests(s, smtp_sender(smtp_server), now=NOW)
        second = approve_due_requests(s, smtp_sender(smtp_server), now=NOW)
    assert len(first.approved) == 2 and second.approved == [] and second.emailed == 0
    assert len(smtp_server.received()) == 6
    assert tenant.scalar("SELECT count(*) FROM notifications") == 6


def test_dr_approval_concurrent_runs_never_approve_a_request_twice(tenant, smtp_server):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        ids = [add_dr(s, seeded.cases["a"], seeded.users["ip_a"], "10.00", NOW - dt.timedelta(minutes=i)).id
               for i in range(60)]

    def run(_: int):
        with tenant.session() as s:
            return approve_due_requests(s, smtp_sender(smtp_server), now=NOW)

    results = run_concurrently(4, run)
    approved = [i for r in results for i in r.approved]
    assert sorted(approved) == sorted(ids)  # each exactly once across the four runs
    # A run that started late sees fewer candidates; every candidate it lost is "skipped".
    assert 0 < sum(len(r.skipped) for r in results) <= 3 * 60
    assert tenant.scalar("SELECT max(version) FROM disbursement_requests") == 2
    assert tenant.scalar("SELECT count(*) FROM notifications") == 60 * 3
    mails = smtp_server.received()
    assert len(mails) == 180 and len({(m.rcpt_tos[0], m.message["Subject"]) for m in mails}) == 180


def test_dr_approval_never_approves_a_request_changed_meanwhile(tenant, smtp_server):
    seeded, drs = _seed_drs(tenant)
    target = drs["due_a"].id
    editor = tenant.engine.connect()
    editor_tx = editor.begin()
    # A user edits the request (amount changes, version bumps) but has not committed yet.
    editor.exec_driver_sql("UPDATE disbursement_requests SET amount = 9999, version = version + 1 WHERE id = %s",
                           (target,))
    result: dict[str, object] = {}

    def run() -> None:
        with tenant.session() as s:
            result["r"] = approve_due_requests(s, None, now=NOW)

    job = threading.Thread(target=run)
    job.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the job read version 1 and now waits on the editor's row lock
        if tenant.scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND query LIKE 'UPDATE disbursement_requests SET status%'"):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the approval never blocked on the edited row")
    editor_tx.commit()
    editor.close()
    job.join(10)
    r = result["r"]
    assert target in r.skipped and target not in r.approved  # type: ignore[attr-defined]
    assert tenant.scalar("SELECT status FROM disbursement_requests WHERE id = :i", i=target) == "PENDING"
    assert tenant.scalar("SELECT count(*) FROM notifications WHERE dedupe_key LIKE :k",
                         k=f"dr_approved:{target}:%") == 0


def test_dr_approval_with_smtp_down_keeps_approvals_and_sends_the_outbox_on_the_next_run(tenant, smtp_server):
    from actors.escrow.mail import MailError, SmtpSender
    from tests.support.chaos import free_port

    _, drs = _seed_drs(tenant)
    down = SmtpSender(host="127.0.0.1", port=free_port(), sender="x@seedtrust.test", timeout=2)
    with tenant.session() as s, pytest.raises(MailError):
        approve_due_requests(s, down, now=NOW)
    assert tenant.scalar("SELECT count(*) FROM disbursement_requests WHERE status = 'APPROVED'") == 2
    assert tenant.scalar("SELECT count(*) FROM notifications WHERE status = 'PENDING'") == 6
    with tenant.session() as s:  # the broker's retry: nothing left to approve, the outbox goes out
        retry = approve_due_requests(s, smtp_sender(smtp_server), now=NOW)
    assert retry.approved == [] and retry.emailed == 6
    assert len(smtp_server.received()) == 6


# -- case close reminders -----------------------------------------------------------------------
def test_close_reminders_go_to_escrow_specialists_of_cases_closing_today(tenant, smtp_server):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        reminded = send_close_reminders(s, smtp_sender(smtp_server), today=TODAY)
    assert reminded == [seeded.cases["a"].id]  # not tomorrow's case, not the closed one
    mails = smtp_server.received()
    assert [m.rcpt_tos for m in mails] == [["es_a@seedtrust.test"]]
    assert mails[0].message["Subject"] == "Case ST-1001 is scheduled to close today"
    assert tenant.rows("SELECT case_id, close_date FROM close_reminders") == [(seeded.cases["a"].id, TODAY)]


def test_close_reminders_twice_and_concurrently_remind_once_per_case_and_date(tenant, smtp_server):
    with tenant.session() as s:
        seed_people_and_cases(s, TODAY)

    def run(_: int):
        with tenant.session() as s:
            return send_close_reminders(s, smtp_sender(smtp_server), today=TODAY)

    concurrent = run_concurrently(3, run)
    again = run(0)
    assert sorted(len(r) for r in concurrent) == [0, 0, 1] and again == []
    assert len(smtp_server.received()) == 1
    assert tenant.scalar("SELECT count(*) FROM close_reminders") == 1


# -- account balance check ----------------------------------------------------------------------
def test_balance_check_records_one_alert_per_breaching_active_case(tenant):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        alerted = check_minimum_balances(s, today=TODAY)
    assert alerted == [seeded.cases["a"].id]
    rows = tenant.rows("SELECT case_id, check_date, balance, minimum_balance FROM balance_alerts")
    assert [(r[0], r[1], str(r[2]), str(r[3])) for r in rows] == [(seeded.cases["a"].id, TODAY, "5000.00",
                                                                   "10000.00")]


def test_balance_check_twice_and_concurrently_records_no_duplicate_alert(tenant):
    with tenant.session() as s:
        seed_people_and_cases(s, TODAY)

    def run(_: int):
        with tenant.session() as s:
            return check_minimum_balances(s, today=TODAY)

    results = run_concurrently(3, run) + [run(0)]
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert tenant.scalar("SELECT count(*) FROM balance_alerts") == 1


# -- account balance reminders ------------------------------------------------------------------
def test_balance_reminders_go_to_case_managers_and_admins(tenant, smtp_server):
    with tenant.session() as s:
        seed_people_and_cases(s, TODAY)
        queued = send_balance_reminders(s, smtp_sender(smtp_server), today=TODAY)
    assert queued == 3
    mails = smtp_server.received()
    assert sorted(m.rcpt_tos[0] for m in mails) == ["admin1@seedtrust.test", "admin2@seedtrust.test",
                                                    "cm_a@seedtrust.test"]
    assert {m.message["Subject"] for m in mails} == {"Case ST-1001 is below its minimum balance"}
    assert "5000.00" in mails[0].message.get_content()


def test_balance_reminders_twice_and_concurrently_send_each_reminder_once(tenant, smtp_server):
    with tenant.session() as s:
        seed_people_and_cases(s, TODAY)

    def run(_: int):
        with tenant.session() as s:
            return send_balance_reminders(s, smtp_sender(smtp_server), today=TODAY)

    results = run_concurrently(3, run) + [run(0)]
    assert sum(results) == 3
    assert len(smtp_server.received()) == 3


# -- user off-site tracking ---------------------------------------------------------------------
def _seed_viewing(tenant):
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        dr = add_dr(s, seeded.cases["a"], seeded.users["ip_a"], "10.00", None)
    for user in ("ip_a", "cm_a"):
        uid = seeded.users[user].id
        tenant.execute("INSERT INTO viewing_dr (user_id, dr_id) VALUES (:u, :d)", u=uid, d=dr.id)
        tenant.execute("INSERT INTO viewing_payment (user_id, payment_ref) VALUES (:u, 'PAY-1')", u=uid)
    return seeded


def test_offsite_tracking_marks_users_offsite_and_clears_viewing_tables(tenant):
    seeded = _seed_viewing(tenant)
    with tenant.session() as s:
        r = mark_users_offsite(s)
    assert (r.users_marked, r.viewing_dr_cleared, r.viewing_payment_cleared) == (len(seeded.users), 2, 2)
    assert tenant.scalar("SELECT count(*) FROM users WHERE on_site") == 0
    assert tenant.scalar("SELECT count(*) FROM viewing_dr") == 0
    assert tenant.scalar("SELECT count(*) FROM viewing_payment") == 0


def test_offsite_tracking_twice_and_concurrently_has_one_effect(tenant):
    seeded = _seed_viewing(tenant)

    def run(_: int):
        with tenant.session() as s:
            return mark_users_offsite(s)

    results = run_concurrently(3, run) + [run(0)]
    assert sum(r.users_marked for r in results) == len(seeded.users)
    assert sum(r.viewing_dr_cleared for r in results) == 2
    assert tenant.scalar("SELECT count(*) FROM users WHERE on_site") == 0
