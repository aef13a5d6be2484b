"""A planted secret never appears in the ledger, error events, logs, CLI output or metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from jobcore.db import control_engine
from tests.conftest import ROOT, TEST_ENV, wait_for
from tests.support.http_recorder import recording_server
from tests.support.ledger import wait_status

pytestmark = pytest.mark.acceptance

SECRET = "PLANTED-5ecret-9f2c7e"


def test_planted_secret_is_in_no_output(broker, start_worker):
    from actors.examples import example_error, example_with_args
    from jobcore.context import job_context

    with recording_server() as (url, recorder):
        worker = start_worker(env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": url})
        with job_context(tenant_id=3, extra={"api_key": SECRET}):
            ok = example_with_args.send(1, 2, api_key=SECRET)
            bad = example_error.send_with_options(args=(f"login failed password={SECRET}",), max_retries=0)
        wait_status(ok.message_id, "FINISHED")
        wait_status(bad.message_id, "FINISHED")
        wait_for(lambda: any(e.get("event") == "$exception" for e in recorder.events()), 15, what="error event")
        events = json.dumps([r["raw"] for r in recorder.requests])

    with control_engine().connect() as conn:
        ledger = json.dumps([list(r) for r in conn.execute(text(
            "SELECT j.*, e.* FROM job_runs j LEFT JOIN job_errors e ON e.job_run_id = j.id")).all()], default=str)
    env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT)}
    cli = "".join(subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                                 text=True).stdout for args in (["runs", "--json"], ["run", bad.message_id],
                                                               ["run", ok.message_id, "--json"]))
    from prometheus_client import generate_latest

    from metrics.server import build_registry

    metrics = generate_latest(build_registry()).decode()
    outputs = {"ledger": ledger, "error events": events, "worker log": worker.log, "cli": cli, "metrics": metrics}
    assert "ExampleError" in events and "EXAMPLE_WITH_ARGS" in ledger and bad.message_id in cli  # not empty
    assert 'actor="EXAMPLE_WITH_ARGS"' in metrics
    for name, output in outputs.items():
        assert SECRET not in output, f"secret leaked into {name}"
