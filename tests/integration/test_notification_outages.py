"""Both products' notification outboxes against real SMTP servers on loopback (issue 14,
item 6): an SMTP outage spends no attempts however long it lasts, one refused recipient
(a 550) is charged and backed off while every other message goes out, a message that
loses the connection cannot block the outbox for good, and what is refused on every
attempt is exported."""

# The fixtures are imported from tests/support (pytest finds them by name), so their use as
# test parameters is not a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import text

from actors.casemgmt.notifications import (
    MAX_ATTEMPTS,
    NotificationServiceDown,
    requeue_failed_notifications,
    run_notifications,
    smtp_from_settings,
)
from jobcore.settings import Settings
from tests.support.casemgmt_data import seed_agency, tenant_db_session
from tests.support.escrow_seed import add_dr, seed_people_and_cases
from tests.support.escrow_services import escrow_tenant_db, tenant  # noqa: F401 - fixtures
from tests.support.metrics_scrape import exporter, value
from tests.support.smtp_servers import PickySmtp, picky_smtp  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SENDER = "jobs@agency.example"
BACKOFF_S = 600.0


def _agency_smtp(server: PickySmtp):
    """The production SMTP factory, configured for the plain loopback server."""
    settings = dataclasses.replace(Settings(), smtp_host=server.host, smtp_port=server.port, smtp_tls="none",
                                   smtp_timeout=5, notification_retry_backoff_s=BACKOFF_S)
    return smtp_from_settings(settings)


def _agency_outbox(session, recipients: list[str]) -> list[int]:
    """One due notification per recipient (subjects n0, n1, ...); returns their ids."""
    seeded = seed_agency(session)
    ids = [session.execute(text(
        "INSERT INTO casemgmt.notifications (kind, source_id, admin_id, recipient, subject, body, due_at) "
        "VALUES ('reminder', :i, :a, :r, :s, 'body', now() - interval '1 minute') RETURNING id"),
        {"i": i, "a": seeded.admin_ids[0], "r": r, "s": f"n{i}"}).scalar_one() for i, r in enumerate(recipients)]
    session.commit()
    return ids


def _agency_rows(session) -> dict[int, tuple]:
    rows = session.execute(text("SELECT id, sent_at IS NOT NULL, attempts, last_error, "
                                "next_attempt_at > now() AS backing_off FROM casemgmt.notifications ORDER BY id"))
    return {r.id: (r[1], r.attempts, r.last_error, r.backing_off) for r in rows}


def _run(session, server: PickySmtp):
    return run_notifications(session, _agency_smtp(server), dt.datetime.now(dt.UTC), sender=SENDER)


def _time_passes(session, table: str = "casemgmt.notifications") -> None:
    """Every back-off has run out (instead of waiting for it)."""
    session.execute(text(f"UPDATE {table} SET next_attempt_at = now() - interval '1 second' "
                         "WHERE next_attempt_at IS NOT NULL"))
    session.commit()


# -- case management ------------------------------------------------------------------------------
def test_agency_notifications_spend_no_attempt_while_smtp_is_down_however_many_runs(agency_db, picky_smtp):
    session = agency_db()
    ids = _agency_outbox(session, ["a@agency.example", "b@agency.example", "c@agency.example"])
    picky_smtp.stop()  # connections refused: an outage
    for _ in range(3 * MAX_ATTEMPTS):  # more runs than a notification has attempts (the old code lost each at 5)
        with pytest.raises(NotificationServiceDown):
            _run(session, picky_smtp)
    rows = _agency_rows(session)
    assert [rows[i][:2] for i in ids] == [(False, 0)] * 3  # nothing sent, nothing charged
    assert "SMTP unavailable" in rows[ids[0]][2] and rows[ids[1]][2] is None  # stopped at the first one

    picky_smtp.start()  # the outage ends: the next run sends all of them
    result = _run(session, picky_smtp)
    assert (result.sent, result.failed) == (3, 0)
    assert picky_smtp.subjects() == ["n0", "n1", "n2"]
    assert all(sent and attempts == 1 and error is None for sent, attempts, error, _ in _agency_rows(session).values())


def test_a_refused_agency_recipient_backs_off_while_the_others_are_sent(agency_db, picky_smtp):
    session = agency_db()
    ids = _agency_outbox(session, ["a@agency.example", "gone@agency.example", "c@agency.example"])
    picky_smtp.refuse.add("gone@agency.example")

    first = _run(session, picky_smtp)  # completes: a refusal is that row's, not the run's
    assert (first.sent, first.failed) == (2, 1)
    assert picky_smtp.subjects() == ["n0", "n2"]
    sent, attempts, error, backing_off = _agency_rows(session)[ids[1]]
    assert (sent, attempts, backing_off) == (False, 1, True) and "550" in error

    # The broker's retry or the next tick, minutes later: the refused row is backing off.
    for _ in range(3):
        assert _run(session, picky_smtp).failed == 0
    assert _agency_rows(session)[ids[1]][1] == 1 and picky_smtp.rcpt_refused == ["gone@agency.example"]

    for _ in range(MAX_ATTEMPTS - 1):  # each back-off runs out, each attempt is refused again
        _time_passes(session)
        assert _run(session, picky_smtp).failed == 1
    assert _agency_rows(session)[ids[1]][:2] == (False, MAX_ATTEMPTS)
    _time_passes(session)
    assert _run(session, picky_smtp).failed == 0  # used up: never tried again...
    assert len(picky_smtp.rcpt_refused) == MAX_ATTEMPTS

    picky_smtp.refuse.clear()  # ...until an operator requeues it once the address is fixed
    assert requeue_failed_notifications(session) == 1
    assert _run(session, picky_smtp).sent == 1 and picky_smtp.subjects() == ["n0", "n1", "n2"]


def test_a_message_that_loses_the_connection_is_charged_and_cannot_block_the_others(agency_db, picky_smtp):
    session = agency_db()
    ids = _agency_outbox(session, ["a@agency.example", "b@agency.example", "c@agency.example"])
    picky_smtp.drop_subjects.add("n0")  # the server answers its DATA with 421 and the client hangs up

    with pytest.raises(NotificationServiceDown, match="connection lost"):
        _run(session, picky_smtp)  # charged, and the run stops: the server may be going down
    assert _agency_rows(session)[ids[0]][:2] == (False, 1)
    assert _run(session, picky_smtp).sent == 2  # the next run: n0 is backing off, the rest go
    assert picky_smtp.subjects() == ["n1", "n2"] and _agency_rows(session)[ids[0]][1] == 1


# -- escrow ---------------------------------------------------------------------------------------
def _escrow_sender(server: PickySmtp):
    from actors.escrow.mail import SmtpSender

    return SmtpSender(host=server.host, port=server.port, sender="jobs@seedtrust.test", timeout=5, tls="none")


def _escrow_rows(tenant) -> dict[str, tuple]:
    return {r.recipient: (r.status, r.attempts, r.last_error, r.backing_off) for r in tenant.rows(
        "SELECT recipient, status, attempts, last_error, next_attempt_at > now() AS backing_off FROM notifications")}


def test_a_refused_recipient_of_the_dr_approval_outbox_does_not_stop_the_others(tenant, picky_smtp):
    from actors.escrow.dr_approval import approve_due_requests

    now = dt.datetime.now(dt.UTC)
    with tenant.session() as s:
        seeded = seed_people_and_cases(s, now.date())
        for case in ("a", "b"):  # each notifies the case's IP, IP Rep and Case Manager
            add_dr(s, seeded.cases[case], seeded.users[f"ip_{case}"], "100.00", now - dt.timedelta(hours=1))
    picky_smtp.refuse.add("ip_a@seedtrust.test")  # the first party of the first request

    with tenant.session() as s:
        result = approve_due_requests(s, _escrow_sender(picky_smtp), now=now)
    assert len(result.approved) == 2 and result.emailed == 5
    assert sorted(str(m["To"]) for m in picky_smtp.received()) == sorted(
        f"{k}@seedtrust.test" for k in ("rep_a", "cm_a", "ip_b", "rep_b", "cm_b"))
    status, attempts, error, backing_off = _escrow_rows(tenant)["ip_a@seedtrust.test"]
    assert (status, attempts, backing_off) == ("PENDING", 1, True) and "550" in error

    with tenant.session() as s:  # the broker's retry of the run: the refused one backs off
        assert approve_due_requests(s, _escrow_sender(picky_smtp), now=now).emailed == 0
    assert picky_smtp.rcpt_refused == ["ip_a@seedtrust.test"]


def test_a_recipient_refused_on_every_attempt_is_failed_and_exported(tenant, picky_smtp, clean_state):
    from actors.escrow.mail import deliver_outbox, enqueue_notification
    from tenancy.registry import create_tenant

    registered = create_tenant("outbox-tenant", "Outbox tenant", "escrow", tenant.url, create_database=False,
                               migrate=False)
    with tenant.session() as s:
        for who in ("gone", "ok"):
            enqueue_notification(s, kind="test", dedupe_key=who, user_id=None, recipient=f"{who}@seedtrust.test",
                                 subject=who, body="b")
        s.commit()
    picky_smtp.refuse.add("gone@seedtrust.test")
    with tenant.session() as s:
        first = deliver_outbox(s, _escrow_sender(picky_smtp), max_attempts=3)
    assert (first.sent, first.refused, first.failed) == (1, 1, 0)
    with exporter() as scrape:
        samples = scrape()
    t = str(registered.id)
    assert value(samples, "jobs_escrow_notifications", tenant_id=t, state="retrying") == 1
    assert value(samples, "jobs_escrow_notifications", tenant_id=t, state="failed") == 0

    for _ in range(2):
        with tenant.session() as s:
            _time_passes(s, "notifications")
            outcome = deliver_outbox(s, _escrow_sender(picky_smtp), max_attempts=3)
    assert (outcome.refused, outcome.failed) == (1, 1)
    assert _escrow_rows(tenant)["gone@seedtrust.test"][:2] == ("FAILED", 3)
    with exporter() as scrape:
        samples = scrape()
    assert value(samples, "jobs_escrow_notifications", tenant_id=t, state="failed") == 1
    assert value(samples, "jobs_escrow_notifications", tenant_id=t, state="retrying") == 0


def test_escrow_outbox_spends_no_attempt_while_smtp_is_down(tenant, picky_smtp):
    from actors.escrow.mail import MailUnavailable, deliver_outbox, enqueue_notification

    with tenant.session() as s:
        for i in range(3):
            enqueue_notification(s, kind="test", dedupe_key=f"k{i}", user_id=None, recipient=f"u{i}@seedtrust.test",
                                 subject=f"s{i}", body="b")
        s.commit()
    picky_smtp.stop()
    for _ in range(10):  # the old code charged one per run and FAILED the first after 5
        with tenant.session() as s, pytest.raises(MailUnavailable):
            deliver_outbox(s, _escrow_sender(picky_smtp))
    assert sorted(v[:2] for v in _escrow_rows(tenant).values()) == [("PENDING", 0)] * 3
    picky_smtp.start()
    with tenant.session() as s:
        assert deliver_outbox(s, _escrow_sender(picky_smtp)).sent == 3


def test_agency_notifications_refused_for_good_are_exported(make_agencies, picky_smtp):
    agency = make_agencies(1)[0]
    session = tenant_db_session(agency.database_url)
    ids = _agency_outbox(session, ["gone@agency.example", "slow@agency.example", "ok@agency.example"])
    session.execute(text("UPDATE casemgmt.notifications SET attempts = :max, last_error = '550' WHERE id = :i"),
                    {"max": MAX_ATTEMPTS, "i": ids[0]})
    session.execute(text("UPDATE casemgmt.notifications SET attempts = 2, last_error = '550' WHERE id = :i"),
                    {"i": ids[1]})
    session.commit()
    with exporter() as scrape:
        samples = scrape()
    t = str(agency.id)
    assert value(samples, "jobs_casemgmt_notifications", tenant_id=t, state="failed") == 1
    assert value(samples, "jobs_casemgmt_notifications", tenant_id=t, state="retrying") == 1
    session.close()
