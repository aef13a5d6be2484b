"""Escrow tenant databases for the exporter tests (prefix ``h6_``), migrated to the escrow
branch of the tenant migration tree (``alembic -c tenancy/alembic.ini upgrade escrow@head``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import BASE_PG, create_database, drop_database
from tests.support.metrics_tools import ROOT


@pytest.fixture()
def escrow_tenants(clean_state: None) -> Iterator[Callable[..., list[Any]]]:
    """Factory: ``escrow_tenants(n, down={i})`` registers n escrow tenants with their own
    database; those in ``down`` point at a port where nothing listens."""
    from tenancy.registry import create_tenant

    created: list[str] = []

    def make(n: int, down: frozenset[int] | set[int] = frozenset()) -> list[Any]:
        tenants = []
        for i in range(n):
            name = f"h6_tenant_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            if i in down:
                url = f"postgresql://root@127.0.0.1:1/{name}"
            else:
                url = create_database(name)
                created.append(name)
                subprocess.run([sys.executable, "-m", "alembic", "-c", "tenancy/alembic.ini", "-x", f"url={url}",
                                "upgrade", "escrow@head"], cwd=ROOT, check=True, capture_output=True)
            tenants.append(create_tenant(f"h6-escrow-{i}-{uuid.uuid4().hex[:4]}", f"Tenant {i}", "escrow", url,
                                         create_database=False, migrate=False))
        return tenants

    assert BASE_PG
    yield make
    for name in created:
        drop_database(name)
