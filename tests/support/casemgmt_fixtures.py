"""Agency databases, seed data and a loopback SMTP server for the case-management tests.

Databases are named ``h5_*``: one template migrated to every head of the tenant tree,
cloned per test (``CREATE DATABASE ... TEMPLATE``) so each test starts from an empty,
fully migrated agency database.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import tests.support.casemgmt_data  # noqa: F401 - sets the credential key for workers
from tests.conftest import BASE_PG, SESSION_TAG, _pg_ok, _unavailable, admin_execute, create_database, drop_database

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

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    sink = SmtpSink("127.0.0.1", port)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
            sink.messages.append(message_from_bytes(envelope.original_content or envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()
