"""EMAIL_MATCHING's domain function on a migrated agency database with synced mail."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from actors.casemgmt.matching import match_emails
from actors.casemgmt.sync import sync_mailbox
from tests.support.casemgmt_data import connect_imap_mailbox, seed_agency
from tests.support.imap_messages import make_message

pytestmark = pytest.mark.integration


def _matches(session) -> set[tuple]:
    return set(session.execute(text(
        "SELECT e.subject, m.case_id, m.match_type FROM casemgmt.email_matches m JOIN casemgmt.emails e ON e.id = "
        "m.email_id")).all())


def test_matching_by_address_and_thread_is_idempotent(agency_db, imap_server):
    session = agency_db()
    seeded = seed_agency(session, cases=3)
    case_a, case_b, case_c = seeded.case_ids
    client_a, client_b = seeded.contact_emails[case_a], seeded.contact_emails[case_b]
    session.execute(text("UPDATE casemgmt.cases SET deleted_at = now() WHERE id = :c"), {"c": case_c})
    session.commit()
    user, _ = imap_server.add_user()
    me = f"{user}@agency.example"
    imap_server.append(
        user,
        make_message("from client a", client_a.upper(), [me], message_id="<root-a@x>"),     # address (case-insensitive)
        make_message("cc client b", "someone@else.example", [me], message_id="<cc-b@x>") .replace(
            b"To: ", f"Cc: {client_b}\r\nTo: ".encode(), 1),                                  # address via Cc
        make_message("re: thread a", "lawyer@firm.example", [me], message_id="<reply-a@x>",
                     in_reply_to="<root-a@x>", references=["<root-a@x>"]),                    # thread only
        make_message("deleted case", seeded.contact_emails[case_c], [me], message_id="<del@x>"),  # deleted case
        make_message("unrelated", "spam@nowhere.example", [me], message_id="<spam@x>"),
    )
    mailbox_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user)
    sync_mailbox(session, mailbox_id)

    first = match_emails(session, batch_size=2)
    expected = {("from client a", case_a, "address"), ("cc client b", case_b, "address"),
                ("re: thread a", case_a, "thread")}
    assert _matches(session) == expected
    assert (first.processed, first.matches) == (5, 3)
    assert session.execute(text("SELECT count(*) FROM casemgmt.emails WHERE matched_at IS NULL")).scalar_one() == 0

    again = match_emails(session)  # a redelivered EMAIL_MATCHING
    assert (again.processed, again.matches) == (0, 0)
    session.execute(text("UPDATE casemgmt.emails SET matched_at = NULL"))  # even forced to re-examine everything
    session.commit()
    assert match_emails(session).matches == 0
    assert _matches(session) == expected


def test_an_earlier_thread_message_joins_the_case_of_a_later_match(agency_db, imap_server):
    session = agency_db()
    seeded = seed_agency(session, cases=1)
    case_id = seeded.case_ids[0]
    user, _ = imap_server.add_user()
    me = f"{user}@agency.example"
    imap_server.append(user, make_message("opening", "lawyer@firm.example", [me], message_id="<t1@x>"))
    mailbox_id = connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user)
    sync_mailbox(session, mailbox_id)
    match_emails(session)
    assert _matches(session) == set()

    imap_server.append(user, make_message("client joins", seeded.contact_emails[case_id], [me], message_id="<t2@x>",
                                          in_reply_to="<t1@x>", references=["<t1@x>"]))
    sync_mailbox(session, mailbox_id)
    match_emails(session)
    assert _matches(session) == {("client joins", case_id, "address"), ("opening", case_id, "thread")}
