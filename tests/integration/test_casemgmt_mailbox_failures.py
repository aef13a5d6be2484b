"""A mailbox that cannot log in fails alone (issue 14, item 3), against the real dovecot IMAP
server: two mailboxes of one agency, one with a wrong (expired) password. The other mailbox
syncs, matching runs for what was synced, and the failing one is recorded on its row and
exported per mailbox."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from actors.casemgmt.matching import match_emails
from actors.casemgmt.sync import connect_mailbox, sync_agency
from tests.support.casemgmt_data import connect_imap_mailbox, seed_agency, tenant_db_session
from tests.support.imap_messages import make_message
from tests.support.ledger import error_rows, wait_status
from tests.support.metrics_scrape import exporter, value

pytestmark = pytest.mark.integration


def _two_mailboxes(session, imap_server):
    """Admin 0's mailbox works and has a message from a case contact; admin 1's password expired."""
    seeded = seed_agency(session, admins=2, cases=1)
    client = seeded.contact_emails[seeded.case_ids[0]]
    good, _ = imap_server.add_user()
    bad, _ = imap_server.add_user()
    imap_server.append(good, make_message("about the case", client, [f"{good}@agency.example"]))
    imap_server.append(bad, make_message("never fetched", client, [f"{bad}@agency.example"]))
    good_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, good)
    bad_id = connect_imap_mailbox(session, seeded.admin_ids[1], imap_server, bad, password="expired-password")
    return seeded, bad, good_id, bad_id


def _streak(session, mailbox_id: int) -> tuple:
    return session.execute(text("SELECT failing_since IS NOT NULL, consecutive_failures, last_error IS NOT NULL "
                                "FROM casemgmt.mailboxes WHERE id = :m"), {"m": mailbox_id}).one()


def test_a_mailbox_with_a_wrong_password_fails_alone_and_matching_gets_the_rest(agency_db, imap_server):
    session = agency_db()
    seeded, bad_user, good_id, bad_id = _two_mailboxes(session, imap_server)
    results = {r.mailbox_id: r for r in sync_agency(session)}
    assert (results[good_id].status, results[good_id].stored) == ("synced", 1)
    assert results[bad_id].status == "failed" and "MailProviderError" in str(results[bad_id].reason)
    assert tuple(_streak(session, bad_id)) == (True, 1, True)
    assert tuple(_streak(session, good_id)) == (False, 0, False)
    assert match_emails(session).matches == 1  # the synced mailbox's mail is matched to the case
    since = session.execute(text("SELECT failing_since FROM casemgmt.mailboxes WHERE id = :m"), {"m": bad_id}).scalar()

    sync_agency(session)  # still failing: the streak grows, its start stays
    assert tuple(_streak(session, bad_id)) == (True, 2, True)
    assert session.execute(text("SELECT failing_since FROM casemgmt.mailboxes WHERE id = :m"),
                           {"m": bad_id}).scalar() == since

    connect_mailbox(session, seeded.admin_ids[1], email_address=f"{bad_user}@agency.example", host=imap_server.host,
                    port=imap_server.port, username=bad_user, secret=imap_server.users[bad_user], use_ssl=False,
                    allow_plaintext_auth=True)  # the test dovecot listens in clear on loopback
    session.commit()  # the admin re-entered the right password
    results = {r.mailbox_id: r for r in sync_agency(session)}
    assert results[bad_id].status == "synced" and results[bad_id].stored == 1
    assert tuple(_streak(session, bad_id)) == (False, 0, False)


def test_worker_agency_sync_completes_and_chains_matching_despite_a_failing_mailbox(make_agencies, imap_server,
                                                                                 start_worker):
    import jobplatform

    tenant = make_agencies(1)[0]
    session = tenant_db_session(tenant.database_url)
    _, _, good_id, bad_id = _two_mailboxes(session, imap_server)
    start_worker(threads=2)
    msg = jobplatform.broker.get_actor("EMAIL_SYNC_AGENCY").send_with_options(job_context={"tenant_id": tenant.id})
    row = wait_status(msg.message_id, "FINISHED", 60)
    assert row["resolution"] == "COMPLETED", error_rows(msg.message_id)
    assert row["attempts"] == 1 and row["result"]["failed"] == [bad_id] and row["result"]["stored"] == 1

    def matched() -> int:
        return int(session.execute(text("SELECT count(*) FROM casemgmt.email_matches")).scalar_one())

    from tests.conftest import wait_for

    wait_for(matched, 30, what="EMAIL_MATCHING to match the synced mailbox's mail")
    assert session.execute(text("SELECT count(*) FROM casemgmt.emails WHERE mailbox_id = :m"),
                           {"m": bad_id}).scalar_one() == 0
    assert tuple(_streak(session, bad_id)) == (True, 1, True)
    session.close()


def test_the_exporter_shows_the_failing_mailbox_and_only_it(make_agencies, imap_server):
    tenant = make_agencies(1)[0]
    session = tenant_db_session(tenant.database_url)
    _, _, good_id, bad_id = _two_mailboxes(session, imap_server)
    sync_agency(session)
    session.execute(text("UPDATE casemgmt.mailboxes SET failing_since = now() - interval '40 minutes' "
                         "WHERE id = :m"), {"m": bad_id})  # the streak began 40 minutes ago
    session.commit()
    with exporter() as scrape:
        s = scrape()
    t = str(tenant.id)
    assert value(s, "jobs_casemgmt_mailbox_sync_failing", tenant_id=t, mailbox_id=str(bad_id)) == 1
    assert value(s, "jobs_casemgmt_mailbox_sync_failing", tenant_id=t, mailbox_id=str(good_id)) == 0
    assert 2390 <= value(s, "jobs_casemgmt_mailbox_sync_failing_seconds", tenant_id=t,
                         mailbox_id=str(bad_id)) <= 2500
    assert value(s, "jobs_casemgmt_mailbox_sync_failing_seconds", tenant_id=t, mailbox_id=str(good_id)) == 0
    session.close()


def test_a_credential_that_no_longer_decrypts_is_that_mailboxs_failure_only(agency_db, imap_server):
    """Its key was rotated out: recorded on its row like a refused login; the rest syncs."""
    session = agency_db()
    _, _, good_id, bad_id = _two_mailboxes(session, imap_server)
    session.execute(text("UPDATE casemgmt.mailboxes SET credential_ciphertext = 'not a fernet token' "
                         "WHERE id = :m"), {"m": bad_id})
    session.commit()
    results = {r.mailbox_id: r for r in sync_agency(session)}
    assert results[good_id].status == "synced"
    assert results[bad_id].status == "failed" and "CredentialError" in str(results[bad_id].reason)
    assert tuple(_streak(session, bad_id)) == (True, 1, True)
