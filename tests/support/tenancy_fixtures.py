"""Tenant databases for tests: one migrated template, cloned per tenant (fast)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import BASE_PG, SESSION_TAG, admin_execute, create_database, drop_database


@pytest.fixture(scope="session")
def tenant_template(control_db: str) -> Iterator[Callable[[str], str]]:
    """Per product, a migrated tenant database used as CREATE DATABASE ... TEMPLATE."""
    from tenancy.registry import migrate_tenant_database

    made: dict[str, str] = {}

    def template(product: str) -> str:
        if product not in made:
            name = f"jpt_{SESSION_TAG}_tmpl_{product}"
            migrate_tenant_database(create_database(name), product)
            made[product] = name
        return made[product]

    yield template
    for name in made.values():
        drop_database(name)


@pytest.fixture()
def make_tenants(tenant_template: Callable[[str], str], clean_state: None) -> Iterator[Callable[..., list]]:
    """Factory: ``make_tenants(n, product="escrow", down={i, ...})`` registers n tenants,
    each with its own database cloned from the template; tenants in ``down`` point at a
    port where nothing listens. ``base`` is the server URL the tenants are registered
    with (e.g. a PgBouncer in front of the test server)."""
    from tenancy.registry import create_tenant

    created: list[str] = []

    def make(n: int, product: str = "escrow", down: set[int] | frozenset[int] = frozenset(),
             base: str = BASE_PG) -> list:
        tenants = []
        for i in range(n):
            name = f"jpt_{SESSION_TAG}_{product}_{len(created)}"
            if i in down:
                url = f"postgresql://root@127.0.0.1:1/{name}"
            else:
                drop_database(name)
                admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{tenant_template(product)}"')
                created.append(name)
                url = f"{base}/{name}"
            tenants.append(create_tenant(f"{product}-{i}-{len(created)}", f"Tenant {i}", product, url,
                                         create_database=False, migrate=False))
        return tenants

    yield make
    for name in created:
        drop_database(name)
