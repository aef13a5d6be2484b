"""REDIS_WAIT_REPLICAS: a send counts only once a replica has it, so a failover cannot lose
it; a send no replica confirmed raises, and sending the same message again is not a
second run."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
from dramatiq import Message

from jobcore.broker import PlatformRedisBroker
from jobcore.errors import ServiceUnavailable
from jobcore.keys import Keys
from jobcore.redis_client import make_client, redis_target
from jobcore.settings import Settings
from jobplatform.root import build_ledger, replication
from tests.conftest import TEST_ENV, wait_for
from tests.support.redis_ha import RedisNode, have

pytestmark = pytest.mark.integration


def _message() -> Message:
    return Message(queue_name="default", actor_name="RECORDED", args=(0.0,), kwargs={}, options={})


def test_sends_wait_for_a_replica_and_a_refused_one_can_be_sent_again(tmp_path: Path):
    if not have("redis-server"):
        pytest.skip("redis-server not installed")
    primary = RedisNode(tmp_path, name="primary")
    replica = RedisNode(tmp_path, name="replica", replica_of=primary.port)
    try:
        def linked() -> bool:
            return replica.client().info("replication").get("master_link_status") == "up"

        wait_for(linked, 20, what="the replica link")
        ns = f"waittest{uuid.uuid4().hex[:8]}"
        s = Settings(redis_url=primary.url, database_url=TEST_ENV["DATABASE_URL"], redis_namespace=ns, dev_env=True,
                     redis_wait_replicas=1, redis_wait_timeout_ms=300)
        keys = Keys(ns)
        broker = PlatformRedisBroker(url=redis_target(s), ledger=build_ledger(s, keys), client=make_client(s),
                                     namespace=ns, replication=replication(s))
        raw = primary.client()
        first = broker.enqueue(_message())
        # Confirmed: the replica holds it the moment send() returns.
        assert replica.client().hexists(keys.messages("default"), first.options["redis_message_id"])

        replica.kill()
        second = _message()
        with pytest.raises(ServiceUnavailable, match="confirmed by 0 of the 1 replicas.*REDIS_WAIT_REPLICAS"):
            broker.enqueue(second)
        replica.start()
        wait_for(linked, 20, what="the replica to come back")
        broker.enqueue(second)  # the caller sends the same message again
        assert raw.hlen(keys.messages("default")) == 2  # the refused send had reached the primary: one copy
        assert raw.hlen(keys.ledger_runs) == 2
        assert raw.xlen(keys.ledger_stream) == 2  # one PENDING event per run
    finally:
        replica.stop()
        primary.stop()


def test_a_worker_back_from_a_redis_outage_does_not_take_the_others_for_dead(tmp_path: Path):
    """After an outage (or a failover) longer than HEARTBEAT_TIMEOUT_MS every worker's
    heartbeat is stale; the first sweeper back must not requeue the others' running jobs.
    A sweeper sweeps only after a whole heartbeat timeout connected."""
    from tests.support.chaos import TcpProxy

    if not have("redis-server"):
        pytest.skip("redis-server not installed")
    node = RedisNode(tmp_path, name="outage")
    proxy = TcpProxy("127.0.0.1", node.port)
    try:
        ns = f"sweeptest{uuid.uuid4().hex[:8]}"
        s = Settings(redis_url=f"redis://127.0.0.1:{proxy.port}/0", database_url=TEST_ENV["DATABASE_URL"],
                     redis_namespace=ns, dev_env=True, redis_retries=0, redis_socket_timeout_s=2)
        keys = Keys(ns)

        def worker() -> PlatformRedisBroker:
            return PlatformRedisBroker(url=redis_target(s), ledger=build_ledger(s, keys), client=make_client(s),
                                       namespace=ns, heartbeat_timeout=1000)
        a, b = worker(), worker()
        raw = node.client()
        raw.hset(keys.messages("default"), "rid-1", _message().encode())
        raw.sadd(keys.acks(a.broker_id, "default"), "rid-1")  # a is running it
        a.heartbeat()
        b.heartbeat()
        proxy.cut()
        for w in (a, b):
            with pytest.raises(redis.ConnectionError):
                w.heartbeat()
        time.sleep(1.5)  # the outage outlasts the heartbeat timeout
        proxy.restore()
        b.heartbeat()  # b is back first
        b.sweep(["default"])
        assert raw.sismember(keys.acks(a.broker_id, "default"), "rid-1"), "b took a, equally cut off, for dead"
        time.sleep(1.1)
        a.heartbeat()
        b.heartbeat()
        b.sweep(["default"])  # b has been connected a whole timeout, a heartbeats again: nothing to do
        assert raw.sismember(keys.acks(a.broker_id, "default"), "rid-1")
        time.sleep(1.1)  # now a is silent for a whole timeout while b is connected
        b.heartbeat()
        b.sweep(["default"])
        assert not raw.sismember(keys.acks(a.broker_id, "default"), "rid-1")
        assert raw.lrange(keys.queue("default"), 0, -1) == [b"rid-1"]
    finally:
        proxy.close()
        node.stop()
