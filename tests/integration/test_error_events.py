"""PostHog `$exception` events from a real worker to a real HTTP server on loopback."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import wait_for
from tests.support.http_recorder import recording_server
from tests.support.ledger import wait_status

pytestmark = pytest.mark.integration


def test_every_failed_attempt_sends_an_exception_event(broker, start_worker):
    from actors.examples import example_error
    from jobcore.context import job_context

    with recording_server() as (url, recorder):
        start_worker(env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": url, "MIN_BACKOFF_MS": "200",
                          "MAX_BACKOFF_MS": "400"})
        with job_context(tenant_id=12):
            msg = example_error.send_with_options(args=("token=abc123SECRET failure",), max_retries=1)
        wait_status(msg.message_id, "FINISHED")
        events = wait_for(lambda: [e for e in recorder.events() if e.get("event") == "$exception"
                                   and e["properties"].get("message_id") == msg.message_id] or None
                          if len([e for e in recorder.events() if e.get("event") == "$exception"]) >= 2 else None,
                          20, what="2 $exception events")
    props = sorted((e["properties"] for e in events), key=lambda p: p["attempt"])
    assert [(p["attempt"], p["final"]) for p in props] == [(1, False), (2, True)]
    for p in props:
        assert p["actor"] == "EXAMPLE_ERROR" and p["queue"] == "default" and p["tenant_id"] == 12
    raw = json.dumps(events)
    assert "ExampleError" in raw
    assert "abc123SECRET" not in raw  # redacted before it leaves the worker


def test_slow_posthog_never_blocks_jobs(broker, start_worker):
    from actors.examples import example, example_error

    with recording_server(delay=30) as (url, recorder):
        start_worker(env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": url, "POSTHOG_TIMEOUT": "20"})
        failed = [example_error.send_with_options(args=("x",), max_retries=0) for _ in range(5)]
        t0 = time.monotonic()
        ok = [example.send(i) for i in range(5)]
        for m in failed + ok:
            wait_status(m.message_id, "FINISHED", timeout=10)
        assert time.monotonic() - t0 < 8
        # The client really was talking to the stalled server meanwhile.
        wait_for(lambda: recorder.requests, 10, what="a request to the slow PostHog")


def test_unreachable_posthog_never_blocks_jobs(broker, start_worker):
    from actors.examples import example, example_error

    start_worker(env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": "http://127.0.0.1:9"})
    failed = example_error.send_with_options(args=("x",), max_retries=0)
    ok = example.send(1)
    assert wait_status(failed.message_id, "FINISHED", timeout=10)["resolution"] == "ERROR"
    assert wait_status(ok.message_id, "FINISHED", timeout=10)["resolution"] == "COMPLETED"
