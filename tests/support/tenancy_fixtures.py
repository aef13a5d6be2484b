"""Tenant databases for tests: one migrated template per product, cloned per tenant (fast)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import BASE_PG, SESSION_TAG, admin_execute, create_database, drop_database


@pytest.fixture(scope="session")
def tenant_template(control_db: str) -> Iterator[Callable[[str], str]]:
    """``tenant_template(product)``: the name of a database migrated to that product's
    branch head, used as ``CREATE DATABASE ... TEMPLATE`` (built once per session)."""
    from tenancy.registry import migrate_tenant_database

    built: dict[str, str] = {}

    def template(product: str) -> str:
        if product not in built:
            name = f"jpt_{SESSION_TAG}_tmpl_{product}"
            migrate_tenant_database(create_database(name), product)
            built[product] = name
        return built[product]

    yield template
    for name in built.values():
        drop_database(name)


@pytest.fixture()
def make_tenants(tenant_template: Callable[[str], str], clean_state: None) -> Iterator[Callable[..., list]]:
    """Factory: ``make_tenants(n, product="escrow", down={i, ...})`` registers n tenants,
    each with its own database cloned from the product's template; tenants in ``down``
    point at a port where nothing listens."""
    from tenancy.registry import create_tenant

    created: list[str] = []

    def make(n: int, product: str = "escrow", down: set[int] | frozenset[int] = frozenset()) -> list:
        tenants = []
        for i in range(n):
            name = f"jpt_{SESSION_TAG}_{product}_{len(created)}"
            if i in down:
                url = f"postgresql://root@127.0.0.1:1/{name}"
            else:
                drop_database(name)
                admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{tenant_template(product)}"')
                created.append(name)
                url = f"{BASE_PG}/{name}"
            tenants.append(create_tenant(f"{product}-{i}-{len(created)}", f"Tenant {i}", product, url,
                                         create_database=False, migrate=False))
        return tenants

    yield make
    for name in created:
        drop_database(name)
