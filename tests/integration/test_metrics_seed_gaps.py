"""Seed failure rows that had no data-level watch (issue 14, "How it is checked"), scraped
over HTTP from real tenant databases: escrow cases closing on the day of the latest
close-reminder run without a reminder (seed 002, "case close reminders missed"), and agency
emails that no matching run has processed (seed 000, EMAIL_MATCHING)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.support.casemgmt_data import seed_agency, tenant_db_session
from tests.support.metrics_scrape import exporter, value
from tests.support.metrics_tenants import escrow_tenants  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def test_cases_closing_without_a_reminder_from_the_days_run_are_exported(escrow_tenants: Any) -> None:  # noqa: F811
    from actors.escrow.reminders import send_close_reminders
    from jobcore.db import make_engine
    from metrics.domain import close_reminder_day

    (tenant,) = escrow_tenants(1)
    day, run_at = close_reminder_day(dt.datetime.now(dt.UTC), 7200)
    engine = make_engine(tenant.database_url)
    with engine.begin() as conn:
        for number, status, close, created in (
                ("C-1", "ACTIVE", day, run_at - dt.timedelta(days=30)),   # missed
                ("C-2", "ACTIVE", day, run_at - dt.timedelta(days=30)),   # missed
                ("C-3", "CLOSED", day, run_at - dt.timedelta(days=30)),   # closed: no reminder due
                ("C-4", "ACTIVE", day + dt.timedelta(days=1), run_at - dt.timedelta(days=30)),  # another day
                ("C-5", "ACTIVE", day, run_at + dt.timedelta(minutes=5))):  # created after the run
            conn.execute(text("INSERT INTO cases (number, name, status, scheduled_close_date, created_at) "
                              "VALUES (:n, :n, :s, :d, :c)"), {"n": number, "s": status, "d": close, "c": created})
    with exporter() as scrape:
        assert value(scrape(), "jobs_escrow_close_reminders_missed", tenant_id=str(tenant.id)) == 2
        with Session(engine) as s:  # the day's run, done late: one reminder row per case
            send_close_reminders(s, None, today=day)
        assert value(scrape(), "jobs_escrow_close_reminders_missed", tenant_id=str(tenant.id)) == 0
    engine.dispose()


def test_synced_emails_waiting_for_matching_are_exported(make_agencies) -> None:
    from actors.casemgmt.matching import match_emails

    (agency,) = make_agencies(1)
    session = tenant_db_session(agency.database_url)
    seeded = seed_agency(session)
    mailbox = session.execute(text("INSERT INTO casemgmt.mailboxes (admin_id, email_address) "
                                   "VALUES (:a, 'x@a.example') RETURNING id"), {"a": seeded.admin_ids[0]}).scalar_one()
    for i, age in enumerate((90, 10)):
        session.execute(text("INSERT INTO casemgmt.emails (mailbox_id, message_id, thread_id, "
                             "from_address, synced_at) VALUES (:m, :k, :k, 'someone@else.example', "
                             "now() - make_interval(mins => :age))"), {"m": mailbox, "k": f"<m{i}@x>", "age": age})
    session.commit()
    t = str(agency.id)
    with exporter() as scrape:
        s = scrape()
        assert value(s, "jobs_casemgmt_unmatched_emails", tenant_id=t) == 2
        assert 5350 <= value(s, "jobs_casemgmt_unmatched_emails_oldest_seconds", tenant_id=t) <= 5500
        match_emails(session)  # processed (none matches a case): nothing waits any more
        s = scrape()
        assert value(s, "jobs_casemgmt_unmatched_emails", tenant_id=t) == 0
        assert value(s, "jobs_casemgmt_unmatched_emails_oldest_seconds", tenant_id=t) == 0
    session.close()
