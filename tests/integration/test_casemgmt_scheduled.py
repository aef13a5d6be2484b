"""The scheduled agency jobs' domain functions on seeded agency databases, with a real
SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import smtplib
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text

from actors.casemgmt.aggregations import run_overnight_aggregations
from actors.casemgmt.cleanup import delete_expired, run_cleanup
from actors.casemgmt.health import CHECKS, run_health_checks
from actors.casemgmt.notifications import NotificationSendFailed, run_notifications
from tests.support.casemgmt_data import seed_agency

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


def _smtp(sink):
    return lambda: smtplib.SMTP(sink.host, sink.port, timeout=5)


def _seed_notifications(session, seeded) -> None:
    admin = seeded.admin_ids[0]
    case = seeded.case_ids[0]
    session.execute(text("INSERT INTO casemgmt.reminders (case_id, admin_id, remind_at, message) VALUES "
                         "(:c, :a, :due, 'call the client'), (:c, :a, :due2, 'file the motion'), "
                         "(:c, :a, :later, 'not yet')"),
                    {"c": case, "a": admin, "due": NOW - timedelta(minutes=5), "due2": NOW - timedelta(hours=2),
                     "later": NOW + timedelta(hours=3)})
    session.execute(text("INSERT INTO casemgmt.case_events (case_id, admin_id, title, starts_at) VALUES "
                         "(:c, :a, 'Hearing', :soon), (:c, :a, 'Deposition', :far)"),
                    {"c": case, "a": admin, "soon": NOW + timedelta(hours=5), "far": NOW + timedelta(days=3)})
    session.commit()


def test_notifications_are_sent_once_even_when_the_job_runs_twice(agency_db, smtp_sink):
    session = agency_db()
    seeded = seed_agency(session)
    _seed_notifications(session, seeded)

    first = run_notifications(session, _smtp(smtp_sink), NOW, sender="jobs@agency.example")
    assert (first.generated, first.sent, first.failed) == (3, 3, 0)
    second = run_notifications(session, _smtp(smtp_sink), NOW, sender="jobs@agency.example")
    assert (second.generated, second.sent) == (0, 0)

    # Two overlapping runs after new work appears still send each notification once.
    session.execute(text("INSERT INTO casemgmt.reminders (case_id, admin_id, remind_at, message) "
                         "SELECT :c, :a, :due, 'batch ' || g FROM generate_series(1, 20) g"),
                    {"c": seeded.case_ids[0], "a": seeded.admin_ids[0], "due": NOW - timedelta(minutes=1)})
    session.commit()
    results = []

    def run() -> None:
        s = agency_db()
        results.append(run_notifications(s, _smtp(smtp_sink), NOW, sender="jobs@agency.example"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.sent for r in results) == 20
    subjects = [m["Subject"] for m in smtp_sink.messages]
    assert len(subjects) == 23 and len({m["Message-ID"] for m in smtp_sink.messages}) == 23
    assert sum(s.startswith("Upcoming: Hearing") for s in subjects) == 1
    assert not any("Deposition" in s for s in subjects)  # outside the 24 h horizon
    assert all(m["To"].startswith("admin0.") for m in smtp_sink.messages)
    assert session.execute(text("SELECT count(*) FROM casemgmt.notifications WHERE sent_at IS NULL")).scalar_one() == 0


def test_smtp_failure_keeps_notifications_unsent_for_the_next_run(agency_db, smtp_sink):
    session = agency_db()
    seeded = seed_agency(session)
    _seed_notifications(session, seeded)

    def refused() -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", 1, timeout=2)  # nothing listens on port 1

    with pytest.raises(NotificationSendFailed):
        run_notifications(session, refused, NOW, sender="jobs@agency.example")
    # An unreachable server charges no attempt; the run stopped at the first (reason kept there).
    assert session.execute(text("SELECT count(*) FROM casemgmt.notifications WHERE sent_at IS NULL AND attempts = 0"
                                )).scalar_one() == 3
    assert session.execute(text("SELECT count(*) FROM casemgmt.notifications WHERE last_error LIKE "
                                "'SMTP unavailable%'")).scalar_one() == 1
    assert run_notifications(session, _smtp(smtp_sink), NOW, sender="jobs@agency.example").sent == 3
    assert len(smtp_sink.messages) == 3


def test_health_checks_store_one_result_per_check_agency_and_run(agency_db):
    session = agency_db()
    seeded = seed_agency(session, admins=1, cases=3)
    good = seed_agency(session, admins=1, cases=1)
    a, admin = seeded.agency_id, seeded.admin_ids[0]
    c1, c2, c3 = seeded.case_ids
    session.execute(text("INSERT INTO casemgmt.cases (agency_id, reference, title) VALUES (NULL, 'ORPHAN-1', "
                         "'orphan')"))
    session.execute(text("INSERT INTO casemgmt.contacts (case_id, name, email) VALUES (:c, 'Bad', "
                         "'not-an-email')"), {"c": c1})
    session.execute(text("INSERT INTO casemgmt.mailboxes (admin_id, email_address, status, credential_ciphertext, "
                         "connected_at, last_synced_at) VALUES (:a, 'm@agency.example', 'connected', NULL, "
                         ":old, :old)"), {"a": admin, "old": NOW - timedelta(hours=30)})
    mailbox = session.execute(text("SELECT id FROM casemgmt.mailboxes")).scalar_one()
    email = session.execute(text("INSERT INTO casemgmt.emails (mailbox_id, message_id, thread_id) VALUES (:m, '<e@x>', "
                                 "'<e@x>') RETURNING id"), {"m": mailbox}).scalar_one()
    session.execute(text("INSERT INTO casemgmt.email_matches (email_id, case_id, match_type) VALUES (:e, :c, "
                         "'address')"),
                    {"e": email, "c": c2})
    session.execute(text("UPDATE casemgmt.cases SET deleted_at = now() WHERE id = :c"), {"c": c2})
    session.execute(text("INSERT INTO casemgmt.notifications (kind, source_id, admin_id, recipient, subject, body, "
                         "due_at) "
                         "VALUES ('reminder', 1, :a, 'x@agency.example', 's', 'b', :due)"),
                    {"a": admin, "due": NOW - timedelta(hours=3)})
    session.execute(text("UPDATE casemgmt.cases SET status = 'closed' WHERE id = :c"), {"c": c3})
    session.commit()

    run_id = run_health_checks(session, NOW, job_message_id="m-1")
    rows = session.execute(text("SELECT check_name, agency_id, status, failing_count, sample_ids "
                                "FROM casemgmt.health_check_results WHERE run_id = :r"), {"r": run_id}).all()
    per_agency = [c for c in CHECKS if c.per_agency]
    assert len(rows) == len(per_agency) * 2 + (len(CHECKS) - len(per_agency))
    failing = {(r.check_name, r.agency_id): (r.failing_count, r.sample_ids) for r in rows if r.status == "fail"}
    orphan = session.execute(text("SELECT id FROM casemgmt.cases WHERE reference = 'ORPHAN-1'")).scalar_one()
    assert failing == {
        ("cases_without_agency", None): (1, [orphan]),
        ("contacts_invalid_email", a): (1, [session.execute(text(
            "SELECT id FROM casemgmt.contacts WHERE email = 'not-an-email'")).scalar_one()]),
        ("emails_matched_to_deleted_cases", a): (1, [email]),
        ("stale_mailbox_sync", a): (1, [mailbox]),
        ("connected_mailbox_without_credentials", a): (1, [mailbox]),
        ("overdue_unsent_notifications", a): (1, [1]),
        ("closed_cases_without_closed_at", a): (1, [c3]),
    }
    assert all(r.status == "pass" for r in rows if r.agency_id == good.agency_id)
    assert session.execute(text("SELECT checks_failed FROM casemgmt.health_check_runs WHERE id = :r"),
                           {"r": run_id}).scalar_one() == 7

    # A second run is stored separately; fixing the data shows in it, not in the old run.
    session.execute(text("UPDATE casemgmt.contacts SET email = 'fixed@clients.example' WHERE email = 'not-an-email'"))
    session.commit()
    second = run_health_checks(session, NOW)
    assert second != run_id
    counts = dict(session.execute(text("SELECT run_id, count(*) FILTER (WHERE status = 'fail') "
                                       "FROM casemgmt.health_check_results GROUP BY run_id")).all())
    assert counts == {run_id: 7, second: 6}


def test_overnight_aggregation_is_idempotent_per_agency_and_local_day(agency_db):
    session = agency_db()
    ny = seed_agency(session, cases=0, tz="America/New_York")
    other = seed_agency(session, cases=0, tz="UTC")
    yesterday = date(2026, 11, 21)
    # 2026-11-21 23:30 in New York is 2026-11-22 04:30 UTC: New York's yesterday, not UTC's.
    late_ny = datetime(2026, 11, 22, 4, 30, tzinfo=UTC)
    session.execute(text("INSERT INTO casemgmt.cases (agency_id, reference, title, opened_at) VALUES "
                         "(:a, 'N1', 'n1', :late), (:a, 'N2', 'n2', :early), (:b, 'U1', 'u1', :late)"),
                    {"a": ny.agency_id, "b": other.agency_id, "late": late_ny,
                     "early": datetime(2026, 11, 20, 12, tzinfo=UTC)})
    session.execute(text("UPDATE casemgmt.cases SET status = 'closed', closed_at = :t WHERE reference = 'N2'"),
                    {"t": datetime(2026, 11, 21, 18, tzinfo=UTC)})
    session.commit()

    def stats() -> dict:
        return {(r.agency_id, r.stat_date): (r.cases_opened, r.cases_closed, r.open_cases)
                for r in session.execute(text("SELECT * FROM casemgmt.daily_statistics"))}

    assert run_overnight_aggregations(session, NOW) == 4  # 2 agencies x 2 days
    first = stats()
    assert first[(ny.agency_id, yesterday)] == (1, 1, 1)
    assert first[(other.agency_id, yesterday)] == (0, 0, 0)
    assert first[(other.agency_id, date(2026, 11, 20))] == (0, 0, 0)
    run_overnight_aggregations(session, NOW)
    assert stats() == first and session.execute(text("SELECT count(*) FROM "
                                                     "casemgmt.daily_statistics")).scalar_one() == 4
    # Late data: a recomputation overwrites the row instead of adding to it.
    session.execute(text("UPDATE casemgmt.cases SET deleted_at = now() WHERE reference = 'N1'"))
    session.commit()
    run_overnight_aggregations(session, NOW)
    assert stats()[(ny.agency_id, yesterday)] == (0, 1, 0)


def test_cleanup_deletes_only_expired_rows_in_batches_and_skips_locked_ones(agency_db):
    session = agency_db()
    seeded = seed_agency(session, cases=0)
    admin = seeded.admin_ids[0]
    for table in ("sessions", "tokens"):
        kind = ", 'reset'" if table == "tokens" else ""
        cols = "admin_id, kind, token_hash, expires_at" if table == "tokens" else "admin_id, token_hash, expires_at"
        session.execute(text(f"INSERT INTO casemgmt.{table} ({cols}) SELECT :a{kind}, md5(g::text || '{table}'), "
                             f"CASE WHEN g <= 2500 THEN :past ELSE :future END FROM generate_series(1, 2600) g"),
                        {"a": admin, "past": NOW - timedelta(minutes=1), "future": NOW + timedelta(days=1)})
    session.commit()
    locked_id = session.execute(text("SELECT min(id) FROM casemgmt.sessions")).scalar_one()
    holder = agency_db()  # the web app is touching one expired session right now
    holder.execute(text("SELECT id FROM casemgmt.sessions WHERE id = :i FOR UPDATE"), {"i": locked_id})

    statements: list[str] = []
    from sqlalchemy import event

    engine = session.get_bind()
    listener = lambda *a: statements.append(a[2]) if a[2].lstrip().startswith("DELETE") else None  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        deleted = run_cleanup(session, NOW, batch_size=1000)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert deleted == {"sessions": 2499, "tokens": 2500}
    assert len(statements) == 6  # 3 batches per table: 1000 + 1000 + <1000
    holder.rollback()
    assert delete_expired(session, "sessions", NOW) == 1  # picked up by the next run
    assert session.execute(text("SELECT count(*) FROM casemgmt.sessions")).scalar_one() == 100
    expired = text("SELECT count(*) FROM casemgmt.tokens WHERE expires_at < :n")
    assert session.execute(expired, {"n": NOW}).scalar_one() == 0
