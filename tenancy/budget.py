"""Tenant connection budget arithmetic (``python -m tenancy budget``).

With ``TENANT_POOL_MODE=lru`` one worker process holds at most
``TENANT_ENGINE_CACHE_SIZE × TENANT_POOL_SIZE`` tenant connections, whatever the number
of tenants (only idle engines are evicted; a thread that needs an engine while all are
busy waits). In practice it is also at most one connection per job thread, since a job
holds one tenant session at a time. W worker processes therefore use at most
``W × cache × pool`` connections, which must fit in ``TENANT_CONNECTION_BUDGET``.

With ``TENANT_POOL_MODE=nullpool`` a process opens one connection per open session (at
most its thread count) to PgBouncer, which bounds the server side with its own
``default_pool_size`` per database and ``max_db_connections``.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobcore.errors import ConfigurationError
from jobcore.settings import Settings


@dataclass(frozen=True)
class Budget:
    """Upper bounds of tenant connections for one deployment shape."""

    processes: int
    threads: int
    tenants: int
    per_process_hard: int       # cache × pool (lru) or threads (nullpool): never exceeded
    per_process_expected: int   # min(hard, threads): one tenant session per job thread
    total_hard: int
    total_expected: int
    unbounded: int              # an engine per tenant per process, no LRU: tenants × pool × processes
    budget: int

    @property
    def fits(self) -> bool:
        return self.total_hard <= self.budget

    def describe(self) -> str:
        return (f"{self.processes} worker processes x {self.threads} threads, {self.tenants} tenants: "
                f"at most {self.per_process_hard} tenant connections per process, {self.total_hard} in total "
                f"(expected peak {self.total_expected}: one session per job thread) against a budget of "
                f"{self.budget} -> {'fits' if self.fits else 'OVER BUDGET'}; one engine per tenant without the "
                f"LRU would allow {self.unbounded}")


def compute(settings: Settings, *, processes: int, threads: int, tenants: int) -> Budget:
    """The budget arithmetic for ``processes`` workers of ``threads`` threads over ``tenants``."""
    if settings.tenant_pool_mode == "nullpool":
        hard = threads
    else:
        hard = settings.tenant_engine_cache_size * settings.tenant_pool_size
    expected = min(hard, threads)
    return Budget(processes, threads, tenants, hard, expected, processes * hard, processes * expected,
                  tenants * settings.tenant_pool_size * processes, settings.tenant_connection_budget)


def check_process(settings: Settings) -> None:
    """Refuse a per-process configuration that alone exceeds the whole budget."""
    if settings.tenant_pool_mode == "lru":
        per_process = settings.tenant_engine_cache_size * settings.tenant_pool_size
        if per_process > settings.tenant_connection_budget:
            raise ConfigurationError(
                f"TENANT_ENGINE_CACHE_SIZE x TENANT_POOL_SIZE = {per_process} tenant connections per process "
                f"exceeds TENANT_CONNECTION_BUDGET = {settings.tenant_connection_budget}")
