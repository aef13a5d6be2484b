"""Email sync domain functions against a real dovecot and a migrated agency database."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from actors.casemgmt.sync import disconnect_mailbox, sync_admin, sync_agency, sync_mailbox
from tests.support.casemgmt_data import connect_imap_mailbox, seed_agency
from tests.support.imap_messages import make_message

pytestmark = pytest.mark.integration


def _emails(session, mailbox_id: int) -> list[tuple]:
    return session.execute(text("SELECT message_id, provider_uid, uidvalidity FROM casemgmt.emails WHERE "
                                "mailbox_id = :m "
                                "ORDER BY message_id"), {"m": mailbox_id}).all()


def _cursor(session, mailbox_id: int) -> tuple:
    return session.execute(text("SELECT uidvalidity, last_uid FROM casemgmt.mailboxes WHERE id = :m"),
                           {"m": mailbox_id}).one()


def test_incremental_sync_fetches_only_messages_after_the_cursor(agency_db, imap_server):
    session = agency_db()
    seeded = seed_agency(session)
    user, _ = imap_server.add_user()
    imap_server.append(user, *[make_message(f"first {i}", "a@x.example", [f"{user}@agency.example"])
                               for i in range(3)])
    mailbox_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user)
    from actors.casemgmt.models import Mailbox

    held = session.get(Mailbox, mailbox_id)  # kept in the session: must not hide the advanced cursor

    first = sync_mailbox(session, mailbox_id, batch_size=2)
    assert (first.status, first.fetched, first.stored, first.full_resync) == ("synced", 3, 3, False)
    validity, last_uid = _cursor(session, mailbox_id)
    assert validity == imap_server.uidvalidity(user) and last_uid == 3

    again = sync_mailbox(session, mailbox_id)
    assert (again.fetched, again.stored) == (0, 0)  # nothing new: nothing fetched
    assert held.last_uid == 3

    imap_server.append(user, make_message("second", "b@x.example", [f"{user}@agency.example"]))
    third = sync_mailbox(session, mailbox_id)
    assert (third.fetched, third.stored) == (1, 1)
    assert _cursor(session, mailbox_id)[1] == 4
    rows = _emails(session, mailbox_id)
    assert len(rows) == 4 and sorted(r.provider_uid for r in rows) == [1, 2, 3, 4]
    subjects = set(session.execute(text("SELECT subject FROM casemgmt.emails")).scalars())
    assert subjects == {"first 0", "first 1", "first 2", "second"}
    assert session.execute(text("SELECT last_synced_at IS NOT NULL FROM casemgmt.mailboxes")).scalar_one()


def test_uidvalidity_change_resyncs_everything_without_duplicates(agency_db, imap_server):
    session = agency_db()
    seeded = seed_agency(session)
    user, _ = imap_server.add_user()
    imap_server.append(user, *[make_message(f"m{i}", "a@x.example", ["z@agency.example"]) for i in range(4)])
    mailbox_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user)
    sync_mailbox(session, mailbox_id)
    old_validity = _cursor(session, mailbox_id)[0]

    imap_server.reset_uidvalidity(user)
    imap_server.append(user, make_message("after reset", "a@x.example", ["z@agency.example"]))
    result = sync_mailbox(session, mailbox_id)

    new_validity = imap_server.uidvalidity(user)
    assert new_validity != old_validity
    assert result.full_resync and result.fetched == 5 and result.stored == 1
    rows = _emails(session, mailbox_id)
    assert len(rows) == 5 and len({r.message_id for r in rows}) == 5
    assert {r.uidvalidity for r in rows} == {new_validity}  # known rows carry their new UIDs
    assert _cursor(session, mailbox_id) == (new_validity, 5)


def test_processing_the_same_sync_twice_stores_each_email_once(agency_db, imap_server):
    session = agency_db()
    seeded = seed_agency(session)
    user, _ = imap_server.add_user()
    imap_server.append(user, *[make_message(f"d{i}", "a@x.example", ["z@agency.example"]) for i in range(30)])
    mailbox_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user)
    errors: list[BaseException] = []

    def run() -> None:  # two deliveries of one message, processed at the same time
        s = agency_db()
        try:
            sync_mailbox(s, mailbox_id, batch_size=7)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    # ... and once more afterwards, with the cursor rewound as if the first commit was lost.
    session.execute(text("UPDATE casemgmt.mailboxes SET last_uid = 0"))
    session.commit()
    assert sync_mailbox(session, mailbox_id).stored == 0
    assert session.execute(text("SELECT count(*), count(DISTINCT message_id) FROM casemgmt.emails")).one() == (30, 30)


def test_disconnect_keeps_mail_deletes_credential_and_later_syncs_end_cleanly(agency_db, imap_server):
    session = agency_db()
    seeded = seed_agency(session, admins=2)
    user, _ = imap_server.add_user()
    other, _ = imap_server.add_user()
    imap_server.append(user, make_message("kept", "a@x.example", ["z@agency.example"]))
    imap_server.append(other, make_message("other", "a@x.example", ["z@agency.example"]))
    mailbox_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user)
    connect_imap_mailbox(session, seeded.admin_ids[1], imap_server, other)
    sync_agency(session)

    assert disconnect_mailbox(session, seeded.admin_ids[0]) is True
    session.commit()
    assert disconnect_mailbox(session, seeded.admin_ids[0]) is False  # idempotent
    session.commit()
    status, credential = session.execute(text("SELECT status, credential_ciphertext FROM casemgmt.mailboxes WHERE "
                                              "id = :m"),
                                         {"m": mailbox_id}).one()
    assert (status, credential) == ("disconnected", None)

    imap_server.append(user, make_message("after disconnect", "a@x.example", ["z@agency.example"]))
    queued = sync_admin(session, seeded.admin_ids[0])  # a sync queued before the disconnect
    assert (queued.status, queued.reason, queued.fetched) == ("skipped", "disconnected", 0)
    results = sync_agency(session)  # the periodic sync no longer touches it
    assert [r.mailbox_id for r in results] != [] and mailbox_id not in [r.mailbox_id for r in results]
    subjects = set(session.execute(text("SELECT subject FROM casemgmt.emails WHERE mailbox_id = :m"),
                                   {"m": mailbox_id}).scalars())
    assert subjects == {"kept"}


def test_disconnect_during_a_running_sync_stops_before_the_next_batch(agency_db, imap_server):
    session = agency_db()
    seeded = seed_agency(session)
    user, _ = imap_server.add_user()
    imap_server.append(user, *[make_message(f"b{i}", "a@x.example", ["z@agency.example"]) for i in range(6)])
    mailbox_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user)

    from actors.casemgmt import sync as sync_module

    real_store = sync_module._store_batch
    calls = 0

    def store_then_disconnect(s, mid, validity, batch):  # the web app disconnects after batch 1
        nonlocal calls
        calls += 1
        stored = real_store(s, mid, validity, batch)
        if calls == 1:
            other = agency_db()
            disconnect_mailbox(other, seeded.admin_ids[0])
            other.commit()
            other.close()
        return stored

    sync_module._store_batch = store_then_disconnect
    try:
        result = sync_mailbox(session, mailbox_id, batch_size=2)
    finally:
        sync_module._store_batch = real_store
    assert (result.status, result.reason, result.stored) == ("skipped", "disconnected", 2)
    assert session.execute(text("SELECT count(*) FROM casemgmt.emails")).scalar_one() == 2


def test_an_echoed_password_is_masked_in_logs_stored_errors_and_raised_errors(agency_db, imap_server, caplog):
    import logging

    from actors.casemgmt.errors import MailProviderError
    from tests.support.casemgmt_leaky_provider import LeakyImapProvider

    secret = "PLANTED-domain-pw-51c0d9"
    session = agency_db()
    seeded = seed_agency(session)
    user, _ = imap_server.add_user()
    mailbox_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user, password=secret)
    caplog.set_level(logging.DEBUG)
    [failed] = sync_agency(session, providers=lambda name: LeakyImapProvider())  # fails alone, reported
    with pytest.raises(MailProviderError) as direct:  # one mailbox, as EMAIL_SYNC_ADMIN does
        sync_mailbox(session, mailbox_id, providers=lambda name: LeakyImapProvider())
    last_error = session.execute(text("SELECT last_error FROM casemgmt.mailboxes WHERE id = :m"),
                                 {"m": mailbox_id}).scalar_one()
    outputs = {"agency result": str(failed.to_dict()), "raised by sync_mailbox": str(direct.value),
               "stored": last_error, "logs": caplog.text,
               "traceback": "".join(__import__("traceback").format_exception(direct.value))}
    assert failed.status == "failed" and "LOGIN" in str(failed.reason)
    assert "LOGIN" in outputs["raised by sync_mailbox"] and "[REDACTED]" in last_error  # the echo happened, masked
    for name, output in outputs.items():
        assert secret not in output, f"secret leaked into {name}"
