"""The demo's seed (cli/demo_seed.py) on migrated tenant databases and a real dovecot:
seeding again adds a round of new work and never a duplicate of the base set or of a
message; an interrupted mail round is completed, not doubled."""

# ruff: noqa: F811 - fixtures imported from tests/support are used as parameters

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from actors.casemgmt import models as cm
from actors.escrow import models as es
from cli.demo_seed import (
    FIRST_ROUND_MAIL,
    NEXT_ROUND_MAIL,
    ImapTarget,
    round_messages,
    seed_agency,
    seed_escrow,
)
from tests.support.escrow_services import escrow_tenant_db, tenant  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

BASE_ESCROW = (es.User, es.Case, es.CaseParty)
BASE_AGENCY = (cm.Agency, cm.Admin, cm.Case, cm.Contact, cm.Mailbox)


def counts(session: Session, models: tuple[type, ...]) -> dict[str, int]:
    return {m.__name__: session.scalar(select(func.count()).select_from(m)) or 0 for m in models}


def test_escrow_seed_twice_adds_a_round_and_duplicates_nothing(tenant: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    today = dt.date(2026, 3, 2)
    with tenant.session() as s:
        first = seed_escrow(s, now=now, today=today)
        base = counts(s, BASE_ESCROW)
    assert base == {"User": 7, "Case": 3, "CaseParty": 12} and first.round == 1 and first.added
    with tenant.session() as s:
        second = seed_escrow(s, now=now + dt.timedelta(hours=1), today=today + dt.timedelta(days=1))
        assert counts(s, BASE_ESCROW) == base and second.added == []
        assert second.round == 2 and second.not_due_request == first.not_due_request
        assert set(second.due_requests).isdisjoint(first.due_requests) and len(second.due_requests) == 2
        assert second.report_request != first.report_request
        due = s.scalars(select(es.DisbursementRequest).where(
            es.DisbursementRequest.id.in_(second.due_requests))).all()
        assert all(d.status == "PENDING" and d.auto_authorize_at <= now + dt.timedelta(hours=1) for d in due)
        # The closing case rolls forward to the new day; the one below its minimum stays so.
        assert s.get(es.Case, second.closing_case).scheduled_close_date == today + dt.timedelta(days=1)
        low = s.get(es.Case, second.below_minimum_case)
        assert low.balance < low.minimum_balance
        assert s.scalar(select(func.count()).select_from(es.ReportRequest)) == 2


def _inbox_ids(imap_server: Any, user: str) -> list[str]:
    conn = imap_server.connect(user)
    try:
        conn.select("INBOX", readonly=True)
        _, data = conn.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        return [part[1].decode().split(":", 1)[1].strip() for part in data if isinstance(part, tuple)]
    finally:
        conn.logout()


def test_agency_seed_and_mail_rounds(agency_db: Callable[[], Session], imap_server: Any) -> None:
    user, password = imap_server.add_user()
    target = ImapTarget(imap_server.host, imap_server.port, user, password)
    now = dt.datetime.now(dt.UTC)
    with agency_db() as s:
        first = seed_agency(s, target, now=now)
        base = counts(s, BASE_AGENCY)
    assert base == {"Agency": 1, "Admin": 2, "Case": 4, "Contact": 5, "Mailbox": 1}
    assert first.round == 1 and len(first.message_ids) == len(FIRST_ROUND_MAIL) == 12
    assert sorted(_inbox_ids(imap_server, user)) == sorted(first.message_ids)

    with agency_db() as s:
        second = seed_agency(s, target, now=now)
        assert counts(s, BASE_AGENCY) == base and second.added == [] and second.mailbox_id == first.mailbox_id
    assert second.round == 2 and len(second.message_ids) == len(NEXT_ROUND_MAIL)

    # A round cut short after its first message is completed by the next seed, not doubled.
    message_id, raw = round_messages(3, now)[0]
    imap_server.append(user, raw)
    with agency_db() as s:
        third = seed_agency(s, target, now=now)
    assert third.round == 3 and message_id in third.message_ids
    inbox = _inbox_ids(imap_server, user)
    assert len(inbox) == len(set(inbox)) == 12 + 3 + 3


def test_agency_seed_without_imap_seeds_the_base_set(agency_db: Callable[[], Session]) -> None:
    with agency_db() as s:
        seed = seed_agency(s, None, now=dt.datetime.now(dt.UTC))
        assert seed.mailbox_id is None and seed.message_ids == []
        assert counts(s, BASE_AGENCY)["Case"] == 4 and counts(s, BASE_AGENCY)["Mailbox"] == 0
