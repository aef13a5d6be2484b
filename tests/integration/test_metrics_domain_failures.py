"""The exporter's escrow failure series (issue 14, items 1, 2, 5, 8), scraped over HTTP from
real escrow tenant databases: FAILED Huntington items and batches, report requests failed
for good, the latest balance check's findings, overdue DR auto-approvals."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.metrics_scrape import exporter, value
from tests.support.metrics_tenants import escrow_tenants  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def _seed(url: str) -> Any:
    from jobcore.db import normalise_url

    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, email, name, role) VALUES (1, 'a@example.com', 'A', 'ADMIN')"))
        conn.execute(text(
            "INSERT INTO cases (id, number, name, status, balance, minimum_balance) VALUES "
            "(1, 'C-1', 'Low', 'ACTIVE', 10, 100), (2, 'C-2', 'Low too', 'ACTIVE', 20, 100), "
            "(3, 'C-3', 'Fine', 'ACTIVE', 500, 100), (4, 'C-4', 'Closed', 'CLOSED', 0, 100)"))
        conn.execute(text("INSERT INTO huntington_batches (id, status, created_at, finished_at) VALUES "
                          "(1, 'FAILED', now() - interval '2 hours', now() - interval '1 hour'), "
                          "(2, 'COMPLETED', now() - interval '2 hours', now() - interval '1 hour')"))
        for status, retryable, age_min in (("FAILED", True, 50), ("FAILED", True, 5), ("FAILED", False, 20),
                                           ("COMPLETED", None, 90)):
            conn.execute(text(
                "INSERT INTO huntington_batch_items (batch_id, case_id, kind, amount, beneficiary, account_token, "
                "status, retryable, updated_at) VALUES (1, 1, 'ACH', 10, 'b', 'tok', :s, :r, "
                "now() - make_interval(mins => :a))"), {"s": status, "r": retryable, "a": age_min})
        for status in (4, 4, 3, 1):
            conn.execute(text("INSERT INTO report_requests (user_id, report_type, status) VALUES (1, 'x', :s)"),
                         {"s": status})
        now = dt.datetime.now(dt.UTC)
        for age, status in ((dt.timedelta(days=3), "PENDING"), (dt.timedelta(days=2), "PENDING"),
                            (dt.timedelta(days=3), "APPROVED"), (dt.timedelta(minutes=1), "PENDING"),
                            (-dt.timedelta(days=1), "PENDING")):
            conn.execute(text("INSERT INTO disbursement_requests (case_id, requested_by, payee, amount, status, "
                              "auto_authorize_at) VALUES (1, 1, 'p', 5, :s, :at)"), {"s": status, "at": now - age})
    return engine


def test_failed_money_reports_balance_findings_and_overdue_approvals_per_tenant(escrow_tenants: Any) -> None:  # noqa: F811
    from sqlalchemy.orm import Session

    from actors.escrow.balance import check_minimum_balances

    busy, empty = escrow_tenants(2)
    engine = _seed(busy.database_url)
    with Session(engine) as s:  # the weekly check of last week, then of this week
        check_minimum_balances(s, today=dt.date.today() - dt.timedelta(days=7))
    with engine.begin() as conn:
        conn.execute(text("UPDATE cases SET balance = 1000 WHERE id = 2"))  # case 2 topped up meanwhile
    with Session(engine) as s:
        check_minimum_balances(s, today=dt.date.today())
    with engine.begin() as conn:
        conn.execute(text("UPDATE cases SET balance = 5 WHERE id = 3"))  # below now, but not a check finding yet
    engine.dispose()
    with exporter() as scrape:
        s = scrape()
    t, e = str(busy.id), str(empty.id)
    assert value(s, "jobs_huntington_items_failed", tenant_id=t, kind="not_sent") == 2
    assert value(s, "jobs_huntington_items_failed", tenant_id=t, kind="rejected") == 1
    assert 2950 <= value(s, "jobs_huntington_item_failed_oldest_age_seconds", tenant_id=t, kind="not_sent") <= 3100
    assert value(s, "jobs_huntington_batches_failed", tenant_id=t) == 1
    assert 3550 <= value(s, "jobs_huntington_batch_failed_oldest_age_seconds", tenant_id=t) <= 3700
    assert value(s, "jobs_report_requests", tenant_id=t, state="failed") == 2
    assert value(s, "jobs_escrow_cases_below_minimum", tenant_id=t) == 1  # case 1 (found, still below)
    assert value(s, "jobs_dr_auto_approval_overdue", tenant_id=t) == 2  # due days ago, still PENDING
    assert value(s, "jobs_dr_auto_approval_overdue_oldest_seconds", tenant_id=t) >= 3 * 86400 - 60
    for name, labels in (("jobs_huntington_items_failed", {"kind": "not_sent"}),
                         ("jobs_huntington_items_failed", {"kind": "rejected"}),
                         ("jobs_huntington_batches_failed", {}), ("jobs_report_requests", {"state": "failed"}),
                         ("jobs_escrow_cases_below_minimum", {}), ("jobs_dr_auto_approval_overdue", {}),
                         ("jobs_dr_auto_approval_overdue_oldest_seconds", {})):
        assert value(s, name, tenant_id=e, **labels) == 0, name  # zero-filled


def test_dr_overdue_cutoff_is_the_latest_scheduled_run_at_least_the_grace_old() -> None:
    from zoneinfo import ZoneInfo

    from metrics.domain import dr_overdue_cutoff

    et = ZoneInfo("America/New_York")
    at_9 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=et)
    assert dr_overdue_cutoff(at_9, 7200) == dt.datetime(2026, 11, 23, 6, 0, tzinfo=et)
    # At 07:00 the 06:00 run is only 1 h old: requests it approved late are not yet overdue.
    at_7 = dt.datetime(2026, 11, 23, 7, 0, tzinfo=et)
    assert dr_overdue_cutoff(at_7, 7200) == dt.datetime(2026, 11, 22, 6, 0, tzinfo=et)
