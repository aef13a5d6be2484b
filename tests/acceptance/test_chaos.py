"""Chaos tests: real worker processes, real Redis and PostgreSQL, injected failures."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis

from tests.conftest import ROOT, TEST_ENV, wait_for
from tests.support.chaos import PrivateRedis, TcpProxy
from tests.support.ledger import count, error_rows, run_row, wait_status

pytestmark = pytest.mark.acceptance


def produce(code: str, env: dict[str, str]) -> list[str]:
    """Send messages from a separate producer process; returns the message ids it prints."""
    script = "import jobplatform\nfrom actors.examples import *\nids = []\n" + code + "\nprint(' '.join(ids))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **TEST_ENV, **env,
                         "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_sigterm_to_the_main_process_lets_the_running_job_finish(broker, start_worker):
    from actors.examples import example_progress

    worker = start_worker()
    msg = example_progress.send(6, 0.3)  # ~1.8 s
    wait_status(msg.message_id, "STARTED")
    code = worker.terminate(timeout=30)
    assert code == 0
    row = run_row(msg.message_id)
    assert (row["status"], row["resolution"], row["attempts"]) == ("FINISHED", "COMPLETED", 1)
    assert broker.client.hlen(f"{broker.namespace}:default.msgs") == 0  # acked, nothing to redeliver
    assert broker.client.zcard(broker.keys.workers) == 0  # it left the worker registry as it stopped


def test_postgres_unavailable_for_30s_loses_no_transition(broker, start_worker):
    from actors.examples import example_progress

    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        db = TEST_ENV["DATABASE_URL"].rsplit("/", 1)[1]
        worker = start_worker(threads=4, env={"DATABASE_URL": f"postgresql://root@127.0.0.1:{proxy.port}/{db}"})
        ids = [example_progress.send(3, 0.3).message_id for _ in range(24)]
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'STARTED'") >= 2, 20,
                 what="jobs running before the outage")
        proxy.cut()
        outage_started = time.monotonic()
        time.sleep(30)
        held = broker.client.xlen(broker.keys.ledger_stream)
        proxy.restore()
        outage = time.monotonic() - outage_started
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 24, 60,
                 what="every run to finish after the outage")
        assert worker.alive()
        assert held > 0  # transitions really were held back in Redis during the outage
        assert outage >= 30
        rows = [run_row(m) for m in ids]
        assert {r["resolution"] for r in rows} == {"COMPLETED"}
        assert all(r["started_at"] is not None and r["attempts"] >= 1 for r in rows)
        assert count("SELECT count(*) FROM job_runs") == 24
        wait_for(lambda: broker.client.xlen(broker.keys.ledger_stream) == 0, 10, what="buffer drained")
    finally:
        proxy.close()


def test_half_open_postgres_connection_recovers_within_60s_and_loses_no_run(broker, start_worker):
    """The worker's connections to PostgreSQL go half-open (a proxy that swallows bytes and
    never answers, never closes; measured on main: stuck for about two hours). With the
    default timeouts the drainer gives the connection up and reconnects: the ledger
    catches up within 60 s of the network coming back, and no run is lost."""
    from tests.support.effect_actors import counted, executions_key

    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        db = TEST_ENV["DATABASE_URL"].rsplit("/", 1)[1]
        env = {"DATABASE_URL": f"postgresql://root@127.0.0.1:{proxy.port}/{db}", "RECONCILE_INTERVAL_MS": "600000"}
        worker = start_worker("tests.support.effect_actors", threads=4, env=env)
        first = [counted.send(0.01).message_id for _ in range(20)]
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 20, 30,
                 what="the first runs to be recorded")
        proxy.freeze()
        during = [counted.send(0.01).message_id for _ in range(20)]
        time.sleep(5)  # jobs keep running; their events wait in Redis
        proxy.heal()  # new connections work again; the frozen ones never answer
        healed = time.monotonic()
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 40, 60,
                 what="the ledger to recover from the half-open connection")
        recovery = time.monotonic() - healed
        assert worker.alive()
        assert recovery < 60, recovery
        executions = broker.client.hgetall(executions_key())
        assert {int(executions[m.encode()]) for m in first + during} == {1}
        assert count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == 40
        print(f"half-open recovery: {recovery:.1f} s after the network came back")
    finally:
        proxy.close()


def test_redis_sigkill_with_aof_everysec_loses_no_message(broker, start_worker, tmp_path):
    """AOF with ``appendfsync everysec`` (what .ci/up and compose run): a Redis *process*
    crash loses nothing acknowledged, since every write reached the kernel before the reply
    (only a crash of the machine itself can lose up to the last second)."""
    from tests.support.ledger import drain

    private = PrivateRedis(tmp_path, appendonly=True, fsync="everysec")
    try:
        env = {"REDIS_URL": private.url}
        ids = produce("ids += [example.send(i).message_id for i in range(50)]", env)
        assert len(ids) == 50
        private.kill()  # SIGKILL: no shutdown save, no final fsync
        private.start()
        drain(private.url)
        assert count("SELECT count(*) FROM job_runs WHERE status = 'PENDING'") == 50  # the buffer survived
        start_worker(env=env)
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == 50, 60,
                 what="all 50 messages processed after the Redis crash")
    finally:
        private.kill()


def test_redis_restart_without_persistence_reenqueues_lost_runs_from_the_ledger(broker, start_worker, tmp_path):
    """Runs whose PENDING reached PostgreSQL (drained: in production within a flush
    interval of the send) are re-enqueued by reconciliation when Redis loses everything."""
    from tests.support.ledger import drain

    private = PrivateRedis(tmp_path, appendonly=False)
    try:
        env = {"REDIS_URL": private.url, "RECONCILE_INTERVAL_MS": "1000", "RECONCILE_GRACE_MS": "1000"}
        ids = produce("ids += [example.send(i).message_id for i in range(20)]", env)
        secret = produce("ids.append(example_with_args.send(1, 2, api_key='sk-lost-SECRET').message_id)", env)[0]
        drain(private.url)  # what a running worker's drainer does within LEDGER_FLUSH_MS
        private.restart()  # everything queued is gone
        client = redis.Redis.from_url(private.url)
        assert client.dbsize() == 0
        assert count("SELECT count(*) FROM job_runs WHERE status = 'PENDING'") == 21
        start_worker(env=env)
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE resolution = 'COMPLETED'") == 20, 60,
                 what="the 20 lost runs to be re-enqueued and completed")
        assert {run_row(m)["attempts"] for m in ids} == {1}
        assert count("SELECT count(*) FROM job_runs") == 21  # same rows, not new runs
        lost = wait_status(secret, "FINISHED")
        assert lost["resolution"] == "ERROR"
        assert "arguments were redacted" in error_rows(secret)[0]["message"]
        stats = client.hgetall(broker.keys.stats)
        assert int(stats[b"reconciled"]) == 20 and int(stats[b"reconcile_closed"]) == 1
    finally:
        private.kill()


def test_redis_restart_without_persistence_loses_only_undrained_runs(broker, tmp_path):
    """The documented limit: events live only in Redis until drained; a Redis that loses
    its data before that loses those runs together with their messages (no trace)."""
    from tests.support.ledger import drain

    private = PrivateRedis(tmp_path, appendonly=False)
    try:
        env = {"REDIS_URL": private.url}
        drained = produce("ids += [example.send(i).message_id for i in range(5)]", env)
        drain(private.url)
        undrained = produce("ids += [example.send(i).message_id for i in range(5)]", env)
        private.restart()
        drain(private.url)
        assert all(run_row(m)["status"] == "PENDING" for m in drained)
        assert all(run_row(m) is None for m in undrained)
    finally:
        private.kill()


def test_a_stuck_fetch_is_detected_and_requeued(broker, start_worker, redis_client):
    from actors.examples import example

    worker = start_worker(env={"STUCK_FETCH_GRACE_MS": "1000"})
    ns = broker.namespace
    broker_ids = [b.decode() for b in redis_client.zrange(broker.keys.workers, 0, -1)]
    assert len(broker_ids) == 1
    # What a lost fetch reply leaves behind: the message moved into the live worker's ack
    # set in Redis, the worker never told.
    message = example.message("stuck").copy(options={"redis_message_id": "stuck-0001"})
    redis_client.hset(f"{ns}:default.msgs", "stuck-0001", message.encode())
    redis_client.sadd(f"{ns}:__acks__.{broker_ids[0]}.default", "stuck-0001")
    t0 = time.monotonic()
    row = wait_status(message.message_id, "FINISHED", timeout=20)
    assert row["resolution"] == "COMPLETED"
    assert time.monotonic() - t0 < 6  # two checks of 1 s grace, plus the job
    assert "stuck in this worker's ack set" in worker.log
    assert int(redis_client.hget(f"{ns}:platform:stats", "stuck_fetch_requeued")) == 1


def test_sigstop_past_heartbeat_timeout_then_sigcont_gives_one_completion_and_one_effect(broker, start_worker):
    import signal

    from sqlalchemy import text

    from jobcore.db import control_engine
    from tests.support.effect_actors import DDL, effect_once

    with control_engine().begin() as conn:
        conn.execute(text(DDL))
        conn.execute(text("TRUNCATE test_effects, test_executions"))
    stopped = start_worker("tests.support.effect_actors")
    msg = effect_once.send(4.0)
    wait_status(msg.message_id, "STARTED")
    os.killpg(stopped.proc.pid, signal.SIGSTOP)  # frozen: no heartbeats, job paused mid-way
    try:
        start_worker("tests.support.effect_actors")  # sweeps the frozen worker's message after 3 s
        first = wait_status(msg.message_id, "FINISHED", timeout=30)
        assert first["attempts"] == 2
    finally:
        os.killpg(stopped.proc.pid, signal.SIGCONT)
    time.sleep(6)  # the resumed worker finishes its copy of the job too
    row = run_row(msg.message_id)
    assert (row["resolution"], row["finished_at"], row["attempts"]) == ("COMPLETED", first["finished_at"], 2)
    assert count("SELECT count(*) FROM job_runs") == 1
    assert count("SELECT count(*) FROM test_executions") == 2  # it did run twice (at-least-once) ...
    assert count("SELECT count(*) FROM test_effects") == 1  # ... with one effect
