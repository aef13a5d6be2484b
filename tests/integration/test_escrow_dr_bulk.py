"""DR auto-approval at volume (issue 14, item 8): every due request in one run, in committed
batches, and every notification they queue delivered in the same run, to a real SMTP server;
a crash mid-run loses nothing and the re-run approves nothing twice."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy.exc import DBAPIError

from actors.escrow.dr_approval import approve_due_requests
from actors.escrow.models import IP, Case, CaseParty
from tests.support.escrow_seed import seed_people_and_cases
from tests.support.escrow_services import escrow_tenant_db, smtp_sender, smtp_server, tenant  # noqa: F401

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 11, 23)
NOW = dt.datetime(2026, 11, 23, 11, 0, tzinfo=dt.UTC)  # 06:00 ET


def _bulk(tenant, n: int) -> int:
    """``n`` due PENDING requests on a case whose one notified party is its IP, plus 3 not yet due."""
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, TODAY)
        case = Case(number="ST-5000", name="Bulk family")
        s.add(case)
        s.flush()
        s.add(CaseParty(case_id=case.id, user_id=seeded.users["ip_a"].id, role=IP))
        s.commit()
        requester = seeded.users["ip_a"].id
    tenant.execute("INSERT INTO disbursement_requests (case_id, requested_by, payee, amount, auto_authorize_at) "
                   "SELECT :c, :u, 'Payee ' || g, 10 + g, :now - make_interval(secs => g) "
                   "FROM generate_series(1, :n) g", c=case.id, u=requester, now=NOW, n=n)
    tenant.execute("INSERT INTO disbursement_requests (case_id, requested_by, payee, amount, auto_authorize_at) "
                   "SELECT :c, :u, 'Later', 5, :now + make_interval(hours => g) FROM generate_series(1, 3) g",
                   c=case.id, u=requester, now=NOW)
    return case.id


def test_five_thousand_due_requests_are_all_approved_and_notified_in_one_run(tenant, smtp_server):
    _bulk(tenant, 5000)
    started = time.monotonic()
    with tenant.session() as s:
        result = approve_due_requests(s, smtp_sender(smtp_server), now=NOW)
    took = time.monotonic() - started
    assert len(result.approved) == len(set(result.approved)) == 5000 and result.skipped == []
    assert result.notified == 5000 and result.emailed == 5000
    print(f"\n5,000 due DRs: approved and e-mailed in {took:.1f} s ({result.batches} batches)")
    assert result.batches == 10
    counts = dict(tenant.rows("SELECT status, count(*) FROM disbursement_requests GROUP BY status"))
    assert counts == {"APPROVED": 5000, "PENDING": 3}
    assert tenant.scalar("SELECT count(*) FROM notifications WHERE status = 'SENT'") == 5000
    mails = smtp_server.received()
    assert len(mails) == 5000 and len({m.message["Subject"] for m in mails}) == 5000
    with tenant.session() as s:  # the next run has nothing left to do
        again = approve_due_requests(s, smtp_sender(smtp_server), now=NOW)
    assert again.approved == [] and again.emailed == 0 and len(smtp_server.received()) == 5000


def test_a_crash_mid_run_keeps_the_committed_batches_and_the_rerun_approves_nothing_twice(tenant):
    _bulk(tenant, 1200)
    # A real failure inside the run: the database refuses the update of one request of the
    # third batch (oldest first: batches hold ids 1200..701, 700..201, 200..1).
    tenant.execute("""
        CREATE FUNCTION refuse_dr_100() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = 100 AND NEW.status = 'APPROVED' THEN RAISE EXCEPTION 'disk full'; END IF;
        RETURN NEW; END $$;
        CREATE TRIGGER refuse_dr_100 BEFORE UPDATE ON disbursement_requests FOR EACH ROW
        EXECUTE FUNCTION refuse_dr_100();""")
    try:
        with tenant.session() as s, pytest.raises(DBAPIError, match="disk full"):
            approve_due_requests(s, None, now=NOW, batch_size=500)
        # Batches 1 and 2 (1,000 requests) stayed committed with their outbox rows; batch 3 rolled back.
        assert tenant.scalar("SELECT count(*) FROM disbursement_requests WHERE status = 'APPROVED'") == 1000
        assert tenant.scalar("SELECT count(*) FROM notifications") == 1000
    finally:
        tenant.execute("DROP TRIGGER refuse_dr_100 ON disbursement_requests; DROP FUNCTION refuse_dr_100()")
    with tenant.session() as s:
        rerun = approve_due_requests(s, None, now=NOW, batch_size=500)
    assert len(rerun.approved) == 200 and rerun.skipped == []
    assert tenant.scalar("SELECT count(*) FROM disbursement_requests WHERE status = 'APPROVED'") == 1200
    assert tenant.scalar("SELECT max(version) FROM disbursement_requests") == 2  # nobody approved twice
    assert tuple(tenant.rows("SELECT count(*), count(DISTINCT dedupe_key) FROM notifications")[0]) == (1200, 1200)
