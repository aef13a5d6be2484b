"""Seed data and helpers for the case-management tests (plain functions, no fixtures)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

# Credentials are encrypted with this key in tests; set at import, before any worker
# starts, so the worker subprocesses (which copy os.environ) can decrypt what tests stored.
os.environ.setdefault("CASEMGMT_CREDENTIAL_KEYS", "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=")


def tenant_db_session(database_url: str) -> Session:
    """A plain session on a tenant database (tests read results with it)."""
    from jobcore.db import normalise_url

    return Session(create_engine(normalise_url(database_url), poolclass=NullPool), expire_on_commit=False)


@dataclass
class SeededAgency:
    """Ids of what :func:`seed_agency` created."""

    agency_id: int
    admin_ids: list[int]
    case_ids: list[int]
    contact_emails: dict[int, str] = field(default_factory=dict)  # case id -> contact address


def seed_agency(session: Session, *, admins: int = 1, cases: int = 2, slug: str | None = None,
                tz: str = "America/New_York") -> SeededAgency:
    """One agency with admins, cases and one contact per case (client<case>@clients.example)."""
    agency_id = session.execute(text("INSERT INTO casemgmt.agencies (name, slug, timezone) VALUES (:n, :s, :tz) "
                                     "RETURNING id"),
                                {"n": "Agency", "s": slug or uuid.uuid4().hex[:8], "tz": tz}).scalar_one()
    admin_ids = [session.execute(text("INSERT INTO casemgmt.admins (agency_id, email, name) VALUES (:a, :e, :n) "
                                      "RETURNING id"),
                                 {"a": agency_id, "e": f"admin{i}.{uuid.uuid4().hex[:6]}@agency.example",
                                  "n": f"Admin {i}"}).scalar_one() for i in range(admins)]
    seeded = SeededAgency(agency_id, admin_ids, [])
    for i in range(cases):
        case_id = session.execute(text("INSERT INTO casemgmt.cases (agency_id, owner_admin_id, reference, title) "
                                       "VALUES (:a, :o, :r, :t) RETURNING id"),
                                  {"a": agency_id, "o": admin_ids[0], "r": f"C-{uuid.uuid4().hex[:8]}",
                                   "t": f"Case {i}"}).scalar_one()
        address = f"client{case_id}@clients.example"
        session.execute(text("INSERT INTO casemgmt.contacts (case_id, name, email) VALUES (:c, :n, :e)"),
                        {"c": case_id, "n": f"Client {case_id}", "e": address})
        seeded.case_ids.append(case_id)
        seeded.contact_emails[case_id] = address
    session.commit()
    return seeded


def utcnow() -> datetime:
    return datetime.now(UTC)


def connect_imap_mailbox(session: Session, admin_id: int, imap: Any, user: str, *, password: str | None = None) -> int:
    """Connect the admin's mailbox to a dovecot user (password from the server unless given)."""
    from actors.casemgmt.sync import connect_mailbox

    mailbox = connect_mailbox(session, admin_id, email_address=f"{user}@agency.example", host=imap.host,
                              port=imap.port, username=user, secret=password or imap.users[user], use_ssl=False,
                              allow_plaintext_auth=True)  # the test dovecot listens in clear on loopback
    session.commit()
    return mailbox.id
