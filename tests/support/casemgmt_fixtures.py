"""Agency databases, seed data and a loopback SMTP server for the case-management tests.

Databases are named ``h5_*``: one template migrated to every head of the tenant tree,
cloned per test (``CREATE DATABASE ... TEMPLATE``) so each test starts from an empty,
fully migrated agency database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tests.conftest import BASE_PG, SESSION_TAG, _pg_ok, _unavailable, admin_execute, create_database, drop_database
from tests.support.imap_server import _free_port

# Credentials are encrypted with this key in tests; set before any worker starts so the
# worker subprocesses (which copy os.environ) can decrypt what the tests stored.
os.environ.setdefault("CASEMGMT_CREDENTIAL_KEYS", "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=")

PREFIX = f"h5_{SESSION_TAG}"


@pytest.fixture(scope="session")
def agency_template() -> Iterator[str]:
    """An agency database migrated with the tenant tree's ``casemgmt@head``."""
    if not _pg_ok():
        _unavailable(f"PostgreSQL at {BASE_PG}")
    from tenancy.registry import migrate_tenant_database

    name = f"{PREFIX}_tmpl"
    migrate_tenant_database(create_database(name), "casemgmt")
    yield name
    drop_database(name)


@pytest.fixture()
def clone_agency_db(agency_template: str) -> Iterator[Callable[[], str]]:
    """Factory: a fresh agency database cloned from the template; returns its URL."""
    created: list[str] = []

    def clone() -> str:
        name = f"{PREFIX}_{uuid.uuid4().hex[:8]}"
        admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{agency_template}"')
        created.append(name)
        return f"{BASE_PG}/{name}"

    yield clone
    for name in created:
        drop_database(name)


@pytest.fixture()
def agency_db(clone_agency_db: Callable[[], str]) -> Iterator[Callable[[], Session]]:
    """Session factory on one fresh agency database (the domain functions' input)."""
    from jobcore.db import normalise_url

    engine = create_engine(normalise_url(clone_agency_db()), pool_size=4)
    sessions: list[Session] = []

    def make() -> Session:
        sessions.append(Session(engine, expire_on_commit=False))
        return sessions[-1]

    yield make
    for session in sessions:  # before the database is dropped under them
        session.close()
    engine.dispose()


@pytest.fixture()
def make_agencies(clone_agency_db: Callable[[], str], clean_state: None) -> Callable[[int], list[Any]]:
    """Factory: register ``n`` casemgmt tenants in the control database, each with its own
    cloned agency database (for worker tests)."""
    from tenancy.registry import create_tenant

    def make(n: int) -> list[Any]:
        return [create_tenant(f"agency-{uuid.uuid4().hex[:8]}", f"Agency {i}", "casemgmt", clone_agency_db(),
                              create_database=False, migrate=False) for i in range(n)]

    return make


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
    agency_id = session.execute(text("INSERT INTO agencies (name, slug, timezone) VALUES (:n, :s, :tz) RETURNING id"),
                                {"n": "Agency", "s": slug or uuid.uuid4().hex[:8], "tz": tz}).scalar_one()
    admin_ids = [session.execute(text("INSERT INTO admins (agency_id, email, name) VALUES (:a, :e, :n) RETURNING id"),
                                 {"a": agency_id, "e": f"admin{i}.{uuid.uuid4().hex[:6]}@agency.example",
                                  "n": f"Admin {i}"}).scalar_one() for i in range(admins)]
    seeded = SeededAgency(agency_id, admin_ids, [])
    for i in range(cases):
        case_id = session.execute(text("INSERT INTO cases (agency_id, owner_admin_id, reference, title) "
                                       "VALUES (:a, :o, :r, :t) RETURNING id"),
                                  {"a": agency_id, "o": admin_ids[0], "r": f"C-{uuid.uuid4().hex[:8]}",
                                   "t": f"Case {i}"}).scalar_one()
        address = f"client{case_id}@clients.example"
        session.execute(text("INSERT INTO contacts (case_id, name, email) VALUES (:c, :n, :e)"),
                        {"c": case_id, "n": f"Client {case_id}", "e": address})
        seeded.case_ids.append(case_id)
        seeded.contact_emails[case_id] = address
    session.commit()
    return seeded


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""

    host: str
    port: int
    messages: list[Message] = field(default_factory=list)


@pytest.fixture()
def smtp_sink() -> Iterator[SmtpSink]:
    """aiosmtpd on an ephemeral loopback port; ``messages`` are the parsed deliveries."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink("127.0.0.1", _free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
            sink.messages.append(message_from_bytes(envelope.original_content or envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


def connect_imap_mailbox(session: Session, admin_id: int, imap: Any, user: str, *, password: str | None = None) -> int:
    """Connect the admin's mailbox to a dovecot user (password from the server unless given)."""
    from actors.casemgmt.sync import connect_mailbox

    mailbox = connect_mailbox(session, admin_id, email_address=f"{user}@agency.example", host=imap.host,
                              port=imap.port, username=user, secret=password or imap.users[user], use_ssl=False)
    session.commit()
    return mailbox.id
