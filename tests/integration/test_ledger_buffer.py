"""The ledger buffer: what it guarantees, each against a defect found on main.

* PENDING travels in the enqueue script with the message: both or neither.
* Two drainers with a short lease over a large backlog apply every event exactly once
  (main: ``SET NX PX 30000`` lock without owner, then ``LTRIM`` by count: a slow drain let
  a second drainer in and each trimmed events the other never applied).
* Bulk fan-out makes no PostgreSQL round trip (main wrote PENDING rows first).
* A revoke from another process decides on the ledger *after* the buffer is applied
  (main read around the buffer: a COMPLETED run could be recorded REVOKED, then retried).
* Reconciliation while the drainers are busy never runs a job twice (main's
  reconciliation read a stale ledger when another drainer held the lock).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis

from jobcore.keys import Keys
from ledger.drainer import Drainer, Lease
from ledger.events import Pending, RunRef, encode
from ledger.store import PgStore
from ledger.stream import EventStream
from tests.conftest import NAMESPACE, ROOT, TEST_ENV, wait_for
from tests.support.chaos import TcpProxy
from tests.support.ledger import count, run_row, settle

pytestmark = pytest.mark.integration


def test_pending_is_written_with_the_message_in_one_step(broker, redis_client):
    from actors.examples import example_with_args

    msg = example_with_args.send(1, 2, label="x", api_key="sk-live-SECRET")
    assert run_row(msg.message_id) is None  # nothing written to PostgreSQL by send()
    entries = redis_client.xrange(broker.keys.ledger_stream)
    assert len(entries) == 1 and msg.message_id.encode() in entries[0][1][b"e"]
    assert b"sk-live-SECRET" not in entries[0][1][b"e"]
    assert redis_client.hexists(broker.keys.messages("default"), msg.options["redis_message_id"])
    settle()
    row = run_row(msg.message_id)
    assert (row["status"], row["attempts"]) == ("PENDING", 0)
    assert row["kwargs"] == {"label": "x", "api_key": "[REDACTED]"}
    assert redis_client.xlen(broker.keys.ledger_stream) == 0  # trimmed once applied


def test_a_failed_enqueue_records_nothing(broker, redis_client, monkeypatch):
    from actors.examples import example
    from jobcore.errors import ServiceUnavailable

    def broken(*args, **kwargs):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(type(broker.platform_script), "__call__", broken)
    with pytest.raises(ServiceUnavailable):
        example.send("never")
    monkeypatch.undo()
    assert redis_client.xlen(broker.keys.ledger_stream) == 0
    assert redis_client.hlen(broker.keys.messages("default")) == 0
    settle()
    assert count("SELECT count(*) FROM job_runs") == 0


def _backlog(client: redis.Redis, keys: Keys, n: int) -> list[str]:
    ids = []
    now = time.time()
    for start in range(0, n, 5000):
        pipe = client.pipeline(transaction=False)
        for _ in range(start, min(start + 5000, n)):
            mid = str(uuid.uuid4())
            ids.append(mid)
            pipe.xadd(keys.ledger_stream, {"e": encode(Pending(RunRef(mid, "EXAMPLE", "default", None, now), now,
                                                               [1], {}, {}))})
        pipe.execute()
    return ids


def test_two_drainers_with_a_1s_lease_apply_a_50k_backlog_exactly_once(broker, redis_client):
    keys = Keys(NAMESPACE)
    message_ids = _backlog(redis_client, keys, 50_000)
    stream = EventStream(redis_client, keys)
    drainers = [Drainer(stream, PgStore(TEST_ENV["DATABASE_URL"], NAMESPACE), chunk=700) for _ in range(2)]
    for d in drainers:
        d.record_ids = []
    leases = [Lease(redis_client, keys.ledger_lease + ":test", 1000) for _ in range(2)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        rng = random.Random(i)
        try:
            while stream.length():
                holds = leases[i].hold()
                # Drain whether or not the lease is held (it only saves work): the cursor
                # must fence them. Stalls past the lease's TTL hand it over mid-drain.
                drainers[i].drain_once()
                if holds and rng.random() < 0.02:
                    time.sleep(1.2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    applied = [d.record_ids or [] for d in drainers]
    assert applied[0] and applied[1], "both drainers must have applied chunks for the test to mean anything"
    assert not set(applied[0]) & set(applied[1])  # never the same entry twice
    assert len(applied[0]) + len(applied[1]) == 50_000  # and none skipped
    assert count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:m)", m=message_ids) == 50_000
    assert count("SELECT applied FROM ledger_cursor WHERE namespace = :n", n=NAMESPACE) == 50_000
    print(f"\n50,000 events by two drainers: {len(applied[0])} + {len(applied[1])} in "
          f"{time.monotonic() - t0:.1f} s")
    for d in drainers:
        d.store.drop()


BULK = """
import jobplatform
from actors.examples import example
sent = jobplatform.broker.enqueue_many([example.message(i) for i in range(2000)])
print(len(sent))
"""


def test_bulk_fan_out_makes_no_postgres_round_trip(broker, redis_client):
    """A producer whose PostgreSQL is behind a proxy: the bulk enqueue of 2,000 messages
    completes without opening a single connection (main wrote every PENDING row to
    PostgreSQL before enqueueing), and every message has its PENDING event in Redis."""
    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        db = TEST_ENV["DATABASE_URL"].rsplit("/", 1)[1]
        out = subprocess.run([sys.executable, "-c", BULK], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT),
                                  "DATABASE_URL": f"postgresql://root@127.0.0.1:{proxy.port}/{db}"})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == "2000"
        assert proxy.accepted == 0
    finally:
        proxy.close()
    assert redis_client.xlen(broker.keys.ledger_stream) == 2000
    assert redis_client.llen(broker.keys.queue("default")) == 2000
    settle()
    assert count("SELECT count(*) FROM job_runs WHERE status = 'PENDING'") == 2000


def _jobctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)})


def test_jobctl_revoke_during_a_flush_waits_for_the_buffer(broker, start_worker, redis_client):
    """The worker's drainer batches every 30 s here, so when jobctl runs, the run has
    completed in Redis while PostgreSQL still says PENDING. jobctl applies the buffer
    first: the run is reported finished, stays COMPLETED, and is never re-run."""
    from tests.support.effect_actors import counted, executions_key

    start_worker("tests.support.effect_actors", env={"LEDGER_FLUSH_MS": "30000"})
    time.sleep(1.5)  # the worker's drainer is idle, waiting for entries
    msg = counted.send(1.0)  # PENDING and STARTED wake the drainer, which then waits 30 s
    settle()  # PENDING in PostgreSQL; the FINISHED written a second later waits in the buffer
    wait_for(lambda: redis_client.hget(executions_key(), msg.message_id), 10, what="the job to run")
    wait_for(lambda: redis_client.hlen(broker.keys.messages("default")) == 0, 10, what="the ack")
    assert run_row(msg.message_id)["status"] != "FINISHED"  # the ledger is behind: the defect's window
    out = _jobctl("revoke", msg.message_id)
    assert out.returncode == 0, out.stderr
    assert "already-finished (COMPLETED)" in out.stdout
    assert run_row(msg.message_id)["resolution"] == "COMPLETED"
    retry = _jobctl("retry", msg.message_id)
    assert retry.returncode == 1 and "only finished ERROR, EXPIRED or REVOKED runs" in retry.stderr
    time.sleep(1)
    assert int(redis_client.hget(executions_key(), msg.message_id)) == 1


def test_reconciliation_while_drainers_are_busy_never_runs_a_job_twice(broker, start_worker, redis_client):
    """Reconciliation with no grace, looping while 2,000 jobs flow through two worker
    processes (whose drainers apply the buffer meanwhile): every job runs exactly once."""
    from tests.support.effect_actors import counted, executions_key

    start_worker("tests.support.effect_actors", processes=2, threads=8,
                 env={"RECONCILE_INTERVAL_MS": "600000", "LEDGER_FLUSH_MS": "200"})
    platform = __import__("jobplatform").platform
    stop = threading.Event()
    reports = []

    def reconcile_forever() -> None:
        while not stop.is_set():
            reports.append(platform.reconcile(grace_s=0))

    looper = threading.Thread(target=reconcile_forever)
    looper.start()
    try:
        ids = [m.message_id for m in broker.enqueue_many([counted.message() for _ in range(2000)])]
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 2000, 120,
                 what="2000 runs finished")
    finally:
        stop.set()
        looper.join(60)
    executions = redis_client.hgetall(executions_key())
    assert len(executions) == 2000 and {int(v) for v in executions.values()} == {1}
    assert sum(len(r.reenqueued) for r in reports) == 0
    assert sum(r.checked for r in reports) > 0  # it really looked at open runs while they ran
    assert count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:m)", m=ids) == 2000


def test_worker_sigkill_loses_no_transition(broker, start_worker):
    """Kill every worker process in the middle of a stream of jobs: after a new worker
    takes over, every run is FINISHED exactly once, and the killed attempts are counted
    (their STARTED events were in Redis, written by the START script)."""
    from actors.examples import example_progress

    first = start_worker(processes=2, threads=4)
    ids = [example_progress.send(4, 0.1).message_id for _ in range(120)]  # ~6 s of work
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") >= 20, 60,
             what="some runs finished before the crash")
    first.kill()
    start_worker(processes=2, threads=4)
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 120, 90,
             what="every run to finish after the crash")
    rows = [run_row(m) for m in ids]
    assert {r["resolution"] for r in rows} == {"COMPLETED"}
    assert all(r["started_at"] is not None and r["result"] == 4 for r in rows)
    assert count("SELECT count(*) FROM job_runs") == 120
    assert count("SELECT count(*) FROM job_runs WHERE attempts >= 2") >= 1


def test_an_event_postgres_refuses_is_parked_and_the_rest_applied(broker, redis_client):
    """One event the database refuses (here: a tenant id beyond integer range) must not
    block the buffer: it is kept verbatim in ledger_dead_events with the reason, the events
    around it are applied, and the exporter counts it (alert LedgerEventsRejected)."""
    from prometheus_client import generate_latest

    from ledger.stream import EventStream
    from metrics.server import build_registry

    now = time.time()
    good = [RunRef(str(uuid.uuid4()), "EXAMPLE", "default", None, now) for _ in range(2)]
    poison = RunRef(str(uuid.uuid4()), "EXAMPLE", "default", 2**40, now)
    stream = EventStream(redis_client, broker.keys)
    for run in (good[0], poison, good[1]):
        stream.append(encode(Pending(run, now, [], {}, {})))
    settle()
    assert all(run_row(r.message_id)["status"] == "PENDING" for r in good)
    assert run_row(poison.message_id) is None
    dead = _rows_of("SELECT stream_id, error, payload FROM ledger_dead_events")
    assert len(dead) == 1 and "out of range" in dead[0][1] and poison.message_id.encode() in bytes(dead[0][2])
    assert redis_client.xlen(broker.keys.ledger_stream) == 0
    assert "jobs_ledger_dead_events 1.0" in generate_latest(build_registry()).decode()


def _rows_of(sql: str) -> list:
    from sqlalchemy import text

    from jobcore.db import control_engine

    with control_engine().connect() as conn:
        return list(conn.execute(text(sql)).all())


def test_workers_stop_taking_messages_while_the_ledger_is_too_far_behind(broker, start_worker, redis_client):
    """PostgreSQL unreachable for long: the buffer grows; past LEDGER_BACKPRESSURE_EVENTS
    the workers stop fetching (Redis stays bounded) and resume by themselves once the
    ledger catches up, losing nothing."""
    from tests.support.effect_actors import counted, executions_key

    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        db = TEST_ENV["DATABASE_URL"].rsplit("/", 1)[1]
        start_worker("tests.support.effect_actors", env={
            "DATABASE_URL": f"postgresql://root@127.0.0.1:{proxy.port}/{db}", "LEDGER_BACKPRESSURE_EVENTS": "60",
            "RECONCILE_INTERVAL_MS": "600000"})
        proxy.cut()
        ids = [counted.send(0.2).message_id for _ in range(100)]  # ~5 s of work for 4 threads
        wait_for(lambda: redis_client.xlen(broker.keys.ledger_stream) >= 60, 30, what="the buffer to fill")
        time.sleep(3)  # the workers have noticed and stopped fetching
        ran = len(redis_client.hgetall(executions_key()))
        time.sleep(2)
        assert len(redis_client.hgetall(executions_key())) == ran  # nothing more was taken
        assert ran < 100
        proxy.restore()
        wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE status = 'FINISHED'") == 100, 60,
                 what="everything to run once the ledger caught up")
        executions = redis_client.hgetall(executions_key())
        assert {int(executions[m.encode()]) for m in ids} == {1}
    finally:
        proxy.close()
