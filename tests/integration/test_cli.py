"""The operator CLI against real Redis, PostgreSQL and a worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TEST_ENV, wait_for
from tests.support.ledger import count, run_row, wait_status

pytestmark = pytest.mark.integration


def jobctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)}, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_every_command_has_help():
    for command in ("runs", "run", "retry", "revoke", "queues", "dead-letters", "prune", "reconcile", "schedules",
                    "tenants", "demo", "console", "completion"):
        out = jobctl(command, "--help")
        assert "Usage: jobctl " + command in out.stdout
    for sub in ("list", "create", "migrate", "budget"):
        assert "Usage: jobctl tenants " + sub in jobctl("tenants", sub, "--help").stdout
    assert "_JOBCTL_COMPLETE" in jobctl("completion", "bash").stdout


def test_runs_run_retry_and_revoke(broker, start_worker):
    from actors.examples import example, example_error, example_progress

    start_worker()
    failed = example_error.send_with_options(args=("cli test",), max_retries=0)
    wait_status(failed.message_id, "FINISHED")
    rows = json.loads(jobctl("runs", "--resolution", "ERROR", "--json").stdout)
    assert [r["message_id"] for r in rows] == [failed.message_id]
    table = jobctl("runs", "--actor", "EXAMPLE_ERROR").stdout
    assert "EXAMPLE_ERROR" in table.splitlines()[1] and "ERROR" in table
    detail = jobctl("run", failed.message_id).stdout
    assert "attempt 1 (final)" in detail and "raise ExampleError" in detail

    run_id = run_row(failed.message_id)["id"]
    out = jobctl("retry", str(run_id), "--operator", "alice").stdout
    new_id = out.split()[-1]
    new = wait_status(new_id, "FINISHED")
    assert new["retry_of"] == run_id
    # A second retry of the same run is refused unless forced...
    again = jobctl("retry", str(run_id), check=False)
    assert again.returncode == 1 and f"run {run_id} was already retried (run {new['id']})" in again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
    forced = jobctl("retry", str(run_id), "--force", "--operator", "alice").stdout
    wait_status(forced.split()[-1], "FINISHED")
    # ...and a COMPLETED run is never retried.
    ok = example.send("fine")
    wait_status(ok.message_id, "FINISHED")
    refused = jobctl("retry", ok.message_id, check=False)
    assert refused.returncode == 1 and "is FINISHED/COMPLETED; only finished ERROR, EXPIRED or REVOKED runs" \
        in refused.stderr
    assert count("SELECT count(*) FROM operator_actions WHERE action = 'retry' AND operator = 'alice' "
                 "AND run_id = :r", r=run_id) == 2

    running = example_progress.send(50, 0.1)
    wait_status(running.message_id, "STARTED")
    assert "revoking" in jobctl("revoke", running.message_id, "--operator", "bob").stdout
    assert wait_status(running.message_id, "FINISHED")["resolution"] == "REVOKED"
    assert count("SELECT count(*) FROM operator_actions WHERE action = 'revoke' AND operator = 'bob'") == 1


def test_queues_and_dead_letters_requeue(broker, start_worker):
    from actors.examples import example_error

    start_worker()
    failed = example_error.send_with_options(args=("to the DLQ",), max_retries=0)
    wait_status(failed.message_id, "FINISHED")
    wait_for(lambda: broker.client.zcard(f"{broker.namespace}:default.XQ") == 1, 10, what="dead letter")
    queues = {q["queue"]: q for q in json.loads(jobctl("queues", "--json").stdout)}
    assert queues["default"]["dead"] == 1
    dead = json.loads(jobctl("dead-letters", "default", "--json").stdout)
    assert [d["message_id"] for d in dead] == [failed.message_id]
    out = jobctl("dead-letters", "default", "--requeue", "all", "--operator", "carol").stdout
    assert "as new message" in out
    assert count("SELECT count(*) FROM operator_actions WHERE action = 'requeue' AND operator = 'carol'") == 1
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE retry_of IS NOT NULL AND status = 'FINISHED'") == 1,
             20, what="the requeued dead letter to run as a linked run")
    assert broker.client.zcard(f"{broker.namespace}:default.XQ") == 1  # it failed again: a new dead letter


def test_prune_deletes_old_finished_runs_in_batches(broker):
    from sqlalchemy import text

    from jobcore.db import control_engine
    from ledger.retention import prune

    with control_engine().begin() as conn:
        conn.execute(text(
            "INSERT INTO job_runs (message_id, actor_name, queue_name, status, resolution, attempts, finished_at) "
            "SELECT md5(g::text), 'EXAMPLE', 'default', 'FINISHED', 'COMPLETED', 1, "
            "now() - make_interval(days => CASE WHEN g <= 1200 THEN 40 ELSE 5 END) FROM generate_series(1, 1500) g"))
        conn.execute(text("INSERT INTO job_runs (message_id, actor_name, queue_name, status, attempts, enqueued_at) "
                          "VALUES ('old-but-open', 'EXAMPLE', 'default', 'PENDING', 0, now() - interval '90 days')"))
    assert prune(control_engine(), 30, batch_size=500) == 1200
    assert count("SELECT count(*) FROM job_runs") == 301  # recent runs and open runs are kept
    assert "pruned 0 finished runs" in jobctl("prune", "--older-than", "30").stdout


def test_schedules_and_tenants(broker, make_tenants):
    from periodic.schedules import production_schedules
    from periodic.ticks import claim_tick, mark_enqueued

    tenants = make_tenants(2, product="casemgmt")
    rows = {r["schedule"]: r for r in json.loads(jobctl("schedules", "--json").stdout)}
    assert {s.name for s in production_schedules()} <= set(rows)
    assert rows["account_balance_check"]["next_et"].startswith("Sun ")
    from datetime import UTC, datetime

    tick = claim_tick("dr_auto_approval", datetime(2026, 11, 20, 11, tzinfo=UTC), "test")
    mark_enqueued(tick, "m-1")
    rows = {r["schedule"]: r for r in json.loads(jobctl("schedules", "--json").stdout)}
    assert rows["dr_auto_approval"]["last_status"] == "ENQUEUED"
    listed = json.loads(jobctl("tenants", "--json").stdout)
    assert [t["id"] for t in listed] == [t.id for t in tenants]
    assert "jobctl" not in jobctl("tenants").stderr


def test_domain_operator_commands_are_wired(broker, make_tenants):
    """The escrow and case-management operator commands reach their functions and actors."""
    (escrow,) = make_tenants(1, product="escrow")
    unsent = json.loads(jobctl("huntington-unsent", str(escrow.id), "--json").stdout)
    assert unsent == {"tenant_id": escrow.id, "batches": []}
    assert json.loads(jobctl("reports-requeue", str(escrow.id), "--operator", "ops").stdout) == {
        "tenant_id": escrow.id, "requeued": []}
    out = jobctl("notifications-requeue", str(escrow.id)).stdout
    message_id = out.split()[-1]
    from tests.support.ledger import settle

    settle()
    row = run_row(message_id)
    assert (row["actor_name"], row["tenant_id"]) == ("requeue_failed_escrow_notifications", escrow.id)
    refused = jobctl("huntington-resend", str(escrow.id), "999", "--dry-run", check=False)
    assert refused.returncode == 0 and json.loads(refused.stdout)["items"] == []
