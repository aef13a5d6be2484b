"""Several worker hosts (process groups with their own ``WORKER_HOSTNAME``), one of them
cut off from Redis: its connection is frozen through a TCP proxy (half-open: nothing
answers, nothing closes), as when a host's network drops its connection state.

* The others get the cut-off host's messages within the documented bound,
  ``HEARTBEAT_TIMEOUT_MS + SWEEP_INTERVAL_MS`` (plus the job they are busy with).
* When the host comes back, the jobs it had not started yet are not run there again (the
  START script sees they are no longer in its ack set: ``NotHeld``); the ones it was
  running when it was cut off did run twice, and their idempotency key kept it to one
  effect. Every run is COMPLETED once in the ledger. Executions are counted in PostgreSQL.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import NAMESPACE, TEST_ENV, wait_for
from tests.support.chaos import TcpProxy
from tests.support.ledger import count

pytestmark = pytest.mark.acceptance

JOB_S = 3.0


def _worker_id(redis_client, host: str) -> str:
    ids = [w.decode() for w in redis_client.zrange(f"{NAMESPACE}:platform:workers", 0, -1)]
    found = [w for w in ids if w.startswith(f"{host}-")]
    assert len(found) == 1, ids
    return found[0]


def test_a_host_cut_off_from_redis_loses_its_messages_to_the_others_and_runs_none_twice_on_return(
        broker, start_worker, redis_client):
    from tests.support.failover_actors import recorded, reset_tables

    reset_tables()
    proxy = TcpProxy("127.0.0.1", int(TEST_ENV["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]))
    try:
        cut = start_worker("tests.support.failover_actors", threads=4, env={
            "WORKER_HOSTNAME": "host-a", "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
            "REDIS_SOCKET_TIMEOUT_S": "5"})
        for host in ("host-b", "host-c"):
            start_worker("tests.support.failover_actors", threads=4, env={"WORKER_HOSTNAME": host})
        a_id = _worker_id(redis_client, "host-a")
        _worker_id(redis_client, "host-b")
        _worker_id(redis_client, "host-c")
        messages = [recorded.send(JOB_S, f"job-{i}") for i in range(24)]
        acks = f"{NAMESPACE}:__acks__.{a_id}.default"
        wait_for(lambda: count("SELECT count(*) FROM test_job_executions WHERE worker_id = :w", w=a_id) >= 2, 30,
                 interval=0.02, what="host-a to be running jobs")
        proxy.freeze()
        frozen_at = time.time()
        held = {m.decode() for m in redis_client.smembers(acks)}
        payloads = redis_client.hmget(f"{NAMESPACE}:default.msgs", list(held)) if held else []
        import json

        held_ids = {json.loads(p)["message_id"] for p in payloads if p}
        assert held_ids, "host-a held nothing when it was cut off"

        # The others' sweeper hands host-a's messages back to the queue within the bound.
        swept = wait_for(lambda: redis_client.scard(acks) == 0 and time.time(), 30, interval=0.02,
                         what="host-a's messages to leave its ack set")
        bound_s = (int(TEST_ENV["HEARTBEAT_TIMEOUT_MS"]) + int(TEST_ENV["SWEEP_INTERVAL_MS"])) / 1000
        heartbeat_s = int(TEST_ENV["HEARTBEAT_INTERVAL_MS"]) / 1000
        redelivered_after = swept - frozen_at
        # Not before host-a's heartbeat is stale (a live host is never swept), not after the bound.
        assert bound_s - int(TEST_ENV["SWEEP_INTERVAL_MS"]) / 1000 - heartbeat_s <= redelivered_after, \
            redelivered_after
        assert redelivered_after <= bound_s + 1.0, (redelivered_after, bound_s)

        # What host-a ran: a START needs Redis, so every execution of host-a's so far began
        # with a START sent before the freeze (read now: a job's row lands just after it).
        with control_engine().connect() as conn:
            running = {r[0] for r in conn.execute(text(
                "SELECT message_id FROM test_job_executions WHERE worker_id = :w"), {"w": a_id})}
        unstarted = held_ids - running
        # host-a comes back; its frozen connections time out and it reconnects.
        proxy.heal()
        healed_at = time.time()
        def settled() -> bool:  # host-a has dealt with each delivery it held but had not started
            dropped = cut.log.count("this worker no longer holds it")
            ran = count("SELECT count(*) FROM test_job_executions WHERE worker_id = :w AND message_id = ANY(:ids)",
                        w=a_id, ids=list(unstarted))
            return dropped + ran >= len(unstarted)
        wait_for(settled, 60, what=f"host-a to deal with the {len(unstarted)} deliveries it had not started")
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == 24, 60,
                 what="all runs completed")
        beat = redis_client.zscore(f"{NAMESPACE}:platform:workers", a_id)
        assert beat is not None and beat / 1000 > frozen_at, "host-a heartbeats again"
        assert cut.alive()
        with control_engine().connect() as conn:
            executions = dict(conn.execute(text(
                "SELECT message_id, count(*) FROM test_job_executions GROUP BY 1")).all())
            on_a_after = conn.execute(text(
                "SELECT count(*) FROM test_job_executions WHERE worker_id = :w AND at > to_timestamp(:t)"),
                {"w": a_id, "t": healed_at}).scalar_one()
            effects = conn.execute(text("SELECT count(*), count(DISTINCT key) FROM test_job_effects")).one()
            hosts = {r[0].split("-")[1] for r in conn.execute(text(
                "SELECT DISTINCT worker_id FROM test_job_executions"))}
            finished_by = {r[0].split("-")[1] for r in conn.execute(text("SELECT DISTINCT worker_id FROM job_runs"))}
        ids = {m.message_id for m in messages}
        assert set(executions) == ids
        twice = {m for m, n in executions.items() if n > 1}
        # Only what host-a was running when it was cut off ran twice; one effect each.
        assert twice == running & held_ids, (twice, running)
        assert all(n <= 2 for n in executions.values())
        assert on_a_after == 0, "host-a ran a job it no longer held"
        assert cut.log.count("this worker no longer holds it") == len(unstarted)
        assert tuple(effects) == (24, 24)
        assert count("SELECT count(*) FROM job_runs") == 24
        assert hosts == {"a", "b", "c"} and finished_by <= hosts, (hosts, finished_by)
        print(f"\ncut-off host: {len(held_ids)} held ({len(running & held_ids)} running), back in the queue "
              f"after {redelivered_after:.2f} s (bound {bound_s:.1f} s); {len(unstarted)} dropped on its return, "
              f"{len(twice)} ran twice with one effect")
    finally:
        proxy.close()
