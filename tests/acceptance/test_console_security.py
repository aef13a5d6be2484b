"""A secret planted in arguments, errors, results, dead letters, tenant URLs and settings
never appears in any page the console serves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_console_browser import free_port
from tests.conftest import BASE_PG, CONTROL_DB, ROOT, TEST_ENV, wait_for
from tests.support.console import PASSWORDS, console_env, csrf_of
from tests.support.ledger import run_row, wait_status
from tests.support.processes import terminate

pytestmark = pytest.mark.acceptance

SECRET = "PLANTED-c0ns0le-5ecret-71d3"


def test_a_planted_secret_reaches_no_page(broker: Any, start_worker: Any, tmp_path: Path) -> None:
    import requests

    from actors.examples import example_error, example_with_args
    from jobcore.context import job_context
    from tenancy.registry import create_tenant

    user, host = BASE_PG.split("://", 1)[1].split("@", 1)
    # The test server trusts local connections, so a password in the URL is accepted and ignored.
    planted_db = f"postgresql://{user}:{SECRET}@{host}/{CONTROL_DB}"
    create_tenant("leaky-escrow", "Leaky", "escrow", f"postgresql://{user}:{SECRET}@{host}/nowhere",
                  create_database=False, migrate=False)
    start_worker()
    with job_context(tenant_id=5, extra={"api_key": SECRET}):
        ok = example_with_args.send(1, 2, label=f"token={SECRET}", api_key=SECRET)
        bad = example_error.send_with_options(args=(f"login failed password={SECRET}",), max_retries=0)
    ok_row, bad_row = wait_status(ok.message_id, "FINISHED"), wait_status(bad.message_id, "FINISHED")
    assert bad_row["resolution"] == "ERROR"
    wait_for(lambda: broker.client.zcard(broker.keys.dead("default")) == 1, 15, what="the dead letter")

    port = free_port()
    env = {**os.environ, **TEST_ENV, **console_env(), "PYTHONPATH": str(ROOT), "DATABASE_URL": planted_db,
           "POSTHOG_API_KEY": SECRET, "INTERNAL_API_KEY": SECRET, "SMTP_PASSWORD": SECRET,
           "CONSOLE_SECRET_KEY": f"{SECRET}-{SECRET}", "CASEMGMT_CREDENTIAL_KEYS": SECRET}
    log_path = tmp_path / "console.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "console", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                return requests.get(f"{base}/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, 60, 0.2, what="console start")
        http = requests.Session()
        pages: dict[str, str] = {"/login": http.get(f"{base}/login", timeout=10).text}
        http.post(f"{base}/login", data={"username": "olive", "password": PASSWORDS["olive"],
                                         "csrf_token": csrf_of(pages["/login"])}, timeout=10)
        paths = ["/", "/runs", "/runs?resolution=ERROR", "/errors", "/errors?window=7d", "/schedules", "/tenants",
                 "/dead-letters?queue=default", f"/runs/{ok_row['id']}", f"/runs/{bad_row['id']}",
                 f"/actions/confirm?action=retry&run={bad_row['id']}", f"/runs?message={ok.message_id}"]
        dead = pages_with(http, base, "/dead-letters?queue=default")
        refs = re.findall(r"action=requeue&amp;queue=default&amp;ref=([^\"&]+)", dead)
        assert refs, "the dead letter is listed"
        paths += [f"/actions/confirm?action=requeue&queue=default&ref={refs[0]}", "/no-such-page"]
        for path in paths:
            response = http.get(f"{base}{path}", timeout=10)
            assert response.status_code == 200 or path == "/no-such-page", (path, response.status_code)
            pages[path] = response.text
        pages["fragment"] = http.get(f"{base}/runs", headers={"HX-Request": "true"}, timeout=10).text
        pages["live"] = http.get(f"{base}/runs/{ok_row['id']}/live", headers={"HX-Request": "true"}, timeout=10).text
    finally:
        terminate(proc)
    # Not empty: the pages do show the runs, the error and the dead letter.
    assert "EXAMPLE_WITH_ARGS" in pages[f"/runs/{ok_row['id']}"] and "[REDACTED]" in pages[f"/runs/{ok_row['id']}"]
    assert "login failed password=[REDACTED]" in pages[f"/runs/{bad_row['id']}"]
    assert "leaky-escrow" in pages["/tenants"] and "ExampleError" in pages["/errors"]
    assert run_row(ok.message_id)["result"]["label"] == "token=[REDACTED]"
    for path, html in pages.items():
        assert SECRET not in html, f"the secret reached {path}"
    assert SECRET not in log_path.read_text(), "the secret reached the console's log"


def pages_with(http: Any, base: str, path: str) -> str:
    return str(http.get(f"{base}{path}", timeout=10).text)
