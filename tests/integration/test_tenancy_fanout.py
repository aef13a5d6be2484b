"""Tenant registry, sessions and fan-out against real databases and a real worker."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from jobcore.errors import TenantError
from tests.conftest import wait_for
from tests.support import tenancy_actors  # noqa: F401 - declares TENANT_PROBE in this process too
from tests.support.ledger import count, wait_status

pytestmark = pytest.mark.integration


class Interrupt(BaseException):
    """Stands in for dramatiq's TimeLimitExceeded / JobRevoked (BaseException)."""


def test_tenant_session_commits_and_rolls_back_on_base_exceptions(make_tenants):
    from tenancy.session import tenant_session

    tenant = make_tenants(1)[0]
    with tenant_session(tenant.id) as s:
        s.execute(text("INSERT INTO tenant_meta (key, value) VALUES ('kept', '1')"))
    with pytest.raises(Interrupt):
        with tenant_session(tenant.id) as s:
            s.execute(text("INSERT INTO tenant_meta (key, value) VALUES ('lost', '1')"))
            raise Interrupt()
    with tenant_session(tenant.id) as s:
        keys = set(s.execute(text("SELECT key FROM tenant_meta")).scalars())
    assert keys == {"kept"}


def test_unreachable_tenant_raises_tenant_error_with_masked_url(make_tenants):
    from tenancy.session import tenant_session

    tenant = make_tenants(1, down={0})[0]
    with pytest.raises(TenantError, match=rf"tenant {tenant.id} database postgresql://root@127.0.0.1:1/"):
        with tenant_session(tenant.id) as s:
            s.execute(text("SELECT 1"))


def test_engine_cache_is_bounded_and_disposes_evicted_engines():
    from tenancy.session import TenantEngines

    cache = TenantEngines(capacity=2, pool_size=1, mode="lru", wait_s=0.3)
    urls = [f"postgresql://root@127.0.0.1:5432/db{i}" for i in range(4)]
    first = cache.acquire(urls[0])
    cache.release(urls[0])
    busy = [cache.acquire(urls[1]), cache.acquire(urls[2])]  # evicts the idle db0 engine
    assert len(cache) == 2 and first not in busy
    with pytest.raises(TenantError, match="budget exhausted"):
        cache.acquire(urls[3])  # both cached engines are in use: wait, then give up
    cache.release(urls[1])
    assert cache.acquire(urls[3]) is not None and len(cache) == 2
    with pytest.raises(ValueError):
        TenantEngines(1, 1, "bogus")


def test_fan_out_over_50_tenants_with_one_down_stays_within_the_connection_budget(make_tenants, start_worker):
    from tenancy.fanout import fan_out

    tenants = make_tenants(50, down={17})
    processes, threads, cache, pool = 2, 8, 4, 1
    budget = processes * cache * pool
    start_worker("tests.support.tenancy_actors", processes=processes, threads=threads,
                 env={"TENANT_ENGINE_CACHE_SIZE": str(cache), "TENANT_POOL_SIZE": str(pool),
                      "TENANT_CONNECTION_BUDGET": str(budget)})
    peak = 0
    stop = threading.Event()
    databases = [t.database_url.rsplit("/", 1)[1] for t in tenants]

    def sample() -> None:
        nonlocal peak
        from jobcore.db import control_engine

        while not stop.is_set():
            with control_engine().connect() as conn:
                # Only this test's tenant databases: other test runs may share the server.
                n = conn.execute(text("SELECT count(*) FROM pg_stat_activity "
                                      "WHERE application_name = 'jobplatform-tenant' AND datname = ANY(:dbs)"),
                                 {"dbs": databases}).scalar_one()
            peak = max(peak, int(n))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        messages = fan_out("TENANT_PROBE", product="escrow")
        assert len(messages) == 50
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 50, 90,
                 what="50 tenant runs to finish")
    finally:
        stop.set()
        sampler.join()
    assert count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == 49
    assert count("SELECT count(*) FROM job_runs WHERE resolution = 'ERROR' AND tenant_id = :t",
                 t=tenants[17].id) == 1
    assert count("SELECT count(DISTINCT tenant_id) FROM job_runs") == 50
    assert 0 < peak <= budget, (peak, budget)
    print(f"\nfan-out: 50 tenants, peak tenant connections {peak} (budget {budget})")


def test_fan_out_targets_active_tenants_of_the_product_and_send_for_tenant_one(make_tenants, start_worker):
    from jobcore.context import JobContext
    from jobcore.errors import UnknownActor
    from tenancy.fanout import fan_out, send_for_tenant
    from tenancy.registry import set_active

    escrow = make_tenants(3)
    agency = make_tenants(1, product="casemgmt")[0]
    set_active(escrow[2].id, False)
    messages = fan_out("TENANT_PROBE", product="escrow", kwargs={"hold_seconds": 0},
                       context=JobContext(user_id=7), extra={"why": "test"})
    assert [m.options["job_context"]["tenant_id"] for m in messages] == [escrow[0].id, escrow[1].id]
    assert all(m.options["job_context"]["user_id"] == 7 and m.options["job_context"]["extra"] == {"why": "test"}
               for m in messages)
    one = send_for_tenant("TENANT_PROBE", agency.id, 0)
    with pytest.raises(TenantError, match="inactive"):
        send_for_tenant("TENANT_PROBE", escrow[2].id)
    with pytest.raises(UnknownActor):
        fan_out("NO_SUCH_ACTOR")
    start_worker("tests.support.tenancy_actors")
    for message, tenant in [(messages[0], escrow[0]), (messages[1], escrow[1]), (one, agency)]:
        row = wait_status(message.message_id, "FINISHED")
        assert (row["resolution"], row["tenant_id"]) == ("COMPLETED", tenant.id)
    assert count("SELECT count(*) FROM job_runs") == 3
