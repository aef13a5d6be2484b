"""Case-management actors in real worker subprocesses: real Redis broker and ledger, real
PostgreSQL agency databases, real dovecot and aiosmtpd on loopback."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import wait_for
from tests.support.casemgmt_data import seed_agency, tenant_db_session, utcnow
from tests.support.imap_messages import make_message
from tests.support.ledger import error_rows, wait_status

pytestmark = pytest.mark.integration


def _send(actor_name: str, tenant_id: int, *args, **options):
    import jobplatform

    actor = jobplatform.broker.get_actor(actor_name)
    return actor.send_with_options(args=args, job_context={"tenant_id": tenant_id}, **options)


def _connect(session, admin_id: int, imap, user: str, password: str | None = None) -> int:
    from tests.support.casemgmt_data import connect_imap_mailbox

    return connect_imap_mailbox(session, admin_id, imap, user, password=password)


def _completed(message_id: str, timeout: float = 60) -> dict:
    row = wait_status(message_id, "FINISHED", timeout)
    assert row["resolution"] == "COMPLETED", (row, error_rows(message_id))
    return row


def _runs(actor_name: str) -> list[dict]:
    with control_engine().connect() as conn:
        return [dict(r) for r in conn.execute(text("SELECT * FROM job_runs WHERE actor_name = :a ORDER BY id"),
                                              {"a": actor_name}).mappings()]


def _finished_runs(actor_name: str, n: int, timeout: float = 60) -> list[dict]:
    return wait_for(lambda: (lambda rs: rs if len(rs) >= n and all(r["status"] == "FINISHED" for r in rs) else None)(
        _runs(actor_name)), timeout, what=f"{n} finished {actor_name} runs")


def test_worker_sync_chains_matching_survives_redelivery_and_uidvalidity_reset(make_agencies, imap_server,
                                                                             start_worker):
    tenant = make_agencies(1)[0]
    session = tenant_db_session(tenant.database_url)
    seeded = seed_agency(session, admins=2, cases=2)
    client = seeded.contact_emails[seeded.case_ids[0]]
    users = [imap_server.add_user()[0] for _ in range(2)]
    for admin_id, user in zip(seeded.admin_ids, users, strict=True):
        imap_server.append(user, *[make_message(f"{user} {i}", client if i == 0 else "x@y.example", ["me@a.example"],
                                                message_id=f"<{user}.{i}@x>") for i in range(5)])
        _connect(session, admin_id, imap_server, user)

    start_worker(threads=4)
    # The same sync delivered twice at once (a redelivery racing the original) ...
    first, second = _send("EMAIL_SYNC_AGENCY", tenant.id), _send("EMAIL_SYNC_AGENCY", tenant.id)
    _completed(first.message_id)
    _completed(second.message_id)
    matching = _finished_runs("EMAIL_MATCHING", 2)
    assert all(r["resolution"] == "COMPLETED" for r in matching)
    counts = session.execute(text("SELECT count(*), count(DISTINCT (mailbox_id, message_id)) FROM "
                                  "casemgmt.emails")).one()
    assert counts == (10, 10)
    # ... and EMAIL_MATCHING ran after each sync: the client's emails are matched.
    assert session.execute(text("SELECT count(*) FROM casemgmt.email_matches")).scalar_one() == 2
    assert session.execute(text("SELECT count(*) FROM casemgmt.emails WHERE matched_at IS NULL")).scalar_one() == 0

    # Incremental: one new message is the only thing the next periodic sync fetches
    # (EMAIL_SYNC_PERIODIC, the scheduler's dispatcher, fans out to EMAIL_SYNC_AGENCY).
    import jobplatform

    imap_server.append(users[1], make_message("reply", client, ["me@a.example"], message_id="<new@x>"))
    _completed(jobplatform.broker.get_actor("EMAIL_SYNC_PERIODIC").send().message_id)
    [periodic] = _finished_runs("EMAIL_SYNC_AGENCY", 3)[2:]
    assert periodic["resolution"] == "COMPLETED"
    assert periodic["tenant_id"] == tenant.id and periodic["result"]["stored"] == 1
    _finished_runs("EMAIL_MATCHING", 3)
    assert session.execute(text("SELECT count(*) FROM casemgmt.email_matches")).scalar_one() == 3

    # UIDVALIDITY reset on the server: EMAIL_SYNC_ADMIN re-reads the folder, stores nothing twice.
    imap_server.reset_uidvalidity(users[0])
    imap_server.append(users[0], make_message("after reset", "x@y.example", ["me@a.example"], message_id="<r@x>"))
    row = _completed(_send("EMAIL_SYNC_ADMIN", tenant.id, seeded.admin_ids[0]).message_id)
    assert row["result"]["full_resync"] is True and row["result"]["fetched"] == 6 and row["result"]["stored"] == 1
    counts = session.execute(text("SELECT count(*), count(DISTINCT (mailbox_id, message_id)) "
                                  "FROM casemgmt.emails")).one()
    assert counts == (12, 12)
    _finished_runs("EMAIL_MATCHING", 4)
    session.close()


def test_sync_queued_before_a_disconnect_ends_cleanly(make_agencies, imap_server, start_worker):
    tenant = make_agencies(1)[0]
    session = tenant_db_session(tenant.database_url)
    seeded = seed_agency(session)
    admin = seeded.admin_ids[0]
    user, _ = imap_server.add_user()
    imap_server.append(user, make_message("synced before", "a@x.example", ["me@a.example"]))
    mailbox_id = _connect(session, admin, imap_server, user)
    start_worker(threads=2)
    _completed(_send("EMAIL_SYNC_ADMIN", tenant.id, admin).message_id)

    imap_server.append(user, make_message("never synced", "a@x.example", ["me@a.example"]))
    queued = _send("EMAIL_SYNC_ADMIN", tenant.id, admin, delay=1500)  # queued, runs after the disconnect
    disconnect = _send("EMAIL_SYNC_DISCONNECT", tenant.id, admin)
    assert _completed(disconnect.message_id)["result"]["disconnected"] is True
    row = _completed(queued.message_id)
    assert row["result"]["status"] == "skipped" and row["result"]["reason"] == "disconnected"
    assert row["attempts"] == 1 and error_rows(queued.message_id) == []
    status, credential = session.execute(text("SELECT status, credential_ciphertext FROM casemgmt.mailboxes WHERE "
                                              "id = :m"),
                                         {"m": mailbox_id}).one()
    assert (status, credential) == ("disconnected", None)
    assert set(session.execute(text("SELECT subject FROM casemgmt.emails")).scalars()) == {"synced before"}
    session.close()


def test_every_scheduled_agency_job_runs_in_a_worker_on_seeded_data(make_agencies, smtp_sink, start_worker):
    tenant = make_agencies(1)[0]
    session = tenant_db_session(tenant.database_url)
    seeded = seed_agency(session, cases=2)
    admin, case = seeded.admin_ids[0], seeded.case_ids[0]
    now = utcnow()
    session.execute(text("INSERT INTO casemgmt.reminders (case_id, admin_id, remind_at, message) VALUES (:c, :a, "
                         ":t, 'call')"),
                    {"c": case, "a": admin, "t": now - timedelta(minutes=1)})
    session.execute(text("INSERT INTO casemgmt.case_events (case_id, admin_id, title, starts_at) "
                         "VALUES (:c, :a, 'Hearing', :t)"),
                    {"c": case, "a": admin, "t": now + timedelta(hours=2)})
    session.execute(text("INSERT INTO casemgmt.contacts (case_id, name, email) VALUES (:c, 'Bad', "
                         "'bad-address')"), {"c": case})
    session.execute(text("INSERT INTO casemgmt.cases (agency_id, reference, title, opened_at) VALUES (:g, 'Y-1', "
                         "'y', :t)"),
                    {"g": seeded.agency_id, "t": now - timedelta(days=1)})
    session.execute(text("INSERT INTO casemgmt.sessions (admin_id, token_hash, expires_at) SELECT :a, md5(g::text), "
                         "CASE WHEN g <= 1500 THEN :past ELSE :future END FROM generate_series(1, 1600) g"),
                    {"a": admin, "past": now - timedelta(hours=1), "future": now + timedelta(hours=1)})
    session.execute(text("INSERT INTO casemgmt.tokens (admin_id, kind, token_hash, expires_at) VALUES "
                         "(:a, 'reset', 'h1', :past), (:a, 'reset', 'h2', :future)"),
                    {"a": admin, "past": now - timedelta(hours=1), "future": now + timedelta(hours=1)})
    session.commit()
    start_worker(threads=2, env={"SMTP_HOST": smtp_sink.host, "SMTP_PORT": str(smtp_sink.port), "SMTP_TLS": "none",
                                 "SMTP_FROM": "jobs@agency.example"})

    first = _completed(_send("agency_notifications", tenant.id).message_id)
    again = _completed(_send("agency_notifications", tenant.id).message_id)
    assert (first["result"]["sent"], again["result"]["sent"]) == (2, 0)
    assert sorted(m["Subject"].split(":")[0] for m in smtp_sink.messages) == ["Reminder", "Upcoming"]
    assert all(m["From"] == "jobs@agency.example" for m in smtp_sink.messages)

    health = _completed(_send("agency_health_checks", tenant.id).message_id)
    failing = dict(session.execute(text("SELECT check_name, failing_count FROM casemgmt.health_check_results "
                                        "WHERE run_id = :r AND status = 'fail'"),
                                   {"r": health["result"]["run_id"]}).all())
    assert failing == {"contacts_invalid_email": 1}

    for _ in range(2):  # idempotent: the second run rewrites the same rows
        _completed(_send("agency_overnight_aggregations", tenant.id).message_id)
    rows = session.execute(text("SELECT stat_date, cases_opened FROM casemgmt.daily_statistics")).all()
    assert len(rows) == 2 and sum(r.cases_opened for r in rows) >= 1

    cleanup = _completed(_send("agency_cleanup", tenant.id).message_id)
    assert cleanup["result"] == {"deleted": [["sessions", 1500], ["tokens", 1]]}
    assert session.execute(text("SELECT count(*) FROM casemgmt.sessions")).scalar_one() == 100
    session.close()


SECRET_OK = "PLANTED-imap-pw-6d1e0c"
SECRET_BAD = "PLANTED-wrong-pw-93ab7f"


def test_mailbox_passwords_appear_in_no_output(make_agencies, imap_server, start_worker):
    from tests.support.http_recorder import recording_server

    tenant = make_agencies(1)[0]
    session = tenant_db_session(tenant.database_url)
    seeded = seed_agency(session, admins=2)
    good, _ = imap_server.add_user(password=SECRET_OK)
    bad, _ = imap_server.add_user()
    imap_server.append(good, make_message("ok", "a@x.example", ["me@a.example"]))
    _connect(session, seeded.admin_ids[0], imap_server, good)
    bad_mailbox = _connect(session, seeded.admin_ids[1], imap_server, bad, password=SECRET_BAD)
    stored = b"".join(session.execute(text("SELECT credential_ciphertext FROM casemgmt.mailboxes")).scalars())
    assert SECRET_OK.encode() not in stored and SECRET_BAD.encode() not in stored  # encrypted at rest

    with recording_server() as (url, recorder):
        worker = start_worker("tests.support.casemgmt_leaky_provider", threads=2,
                              env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": url})
        # The agency sync completes (the bad mailbox fails alone, recorded on its row); syncing
        # the bad admin's mailbox on its own raises, with the provider's masked text.
        agency = wait_status(_send("EMAIL_SYNC_AGENCY", tenant.id).message_id, "FINISHED", 60)
        failed = _send("EMAIL_SYNC_ADMIN", tenant.id, seeded.admin_ids[1], max_retries=0)
        row = wait_status(failed.message_id, "FINISHED", 60)
        wait_for(lambda: any(e.get("event") == "$exception" for e in recorder.events()), 15, what="error event")
        events = json.dumps([r["raw"] for r in recorder.requests])
    assert agency["resolution"] == "COMPLETED" and agency["result"]["failed"] == [bad_mailbox]
    assert row["resolution"] == "ERROR"
    time.sleep(0.5)  # let the worker flush its last log lines
    with control_engine().connect() as conn:
        ledger = json.dumps([list(r) for r in conn.execute(text(
            "SELECT j.*, e.* FROM job_runs j LEFT JOIN job_errors e ON e.job_run_id = j.id")).all()], default=str)
    last_error = session.execute(text("SELECT last_error FROM casemgmt.mailboxes WHERE id = :m"),
                                 {"m": bad_mailbox}).scalar_one()
    outputs = {"ledger": ledger, "error events": events, "worker log": worker.log, "mailbox last_error": last_error}
    # Not vacuous: the failure is there, with its (masked) provider text.
    assert "MailProviderError" in ledger and "LOGIN" in last_error and "[REDACTED]" in last_error
    assert "MailProviderError" in events
    for name, output in outputs.items():
        for secret in (SECRET_OK, SECRET_BAD):
            assert secret not in output, f"{secret} leaked into {name}"
    assert session.execute(text("SELECT count(*) FROM casemgmt.emails")).scalar_one() == 1  # the good mailbox synced
    session.close()
