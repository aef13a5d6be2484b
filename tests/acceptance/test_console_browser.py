"""The console in a real browser: Debian's chromium driven by Playwright, a worker and
the console as subprocesses. Saves a screenshot of every page to docs/images/."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, ROOT, TEST_ENV, wait_for
from tests.support.console import PASSWORDS, console_env
from tests.support.ledger import count, run_row, wait_status
from tests.support.processes import terminate

pytestmark = pytest.mark.acceptance

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots are test artifacts (under the test's tmp dir); CONSOLE_SCREENSHOTS=docs writes
# them to docs/images/ instead, which is how the documentation's pictures are refreshed.
IMAGES = ROOT / "docs" / "images" if os.environ.get("CONSOLE_SCREENSHOTS") == "docs" else \
    Path(os.environ.get("CONSOLE_SCREENSHOTS", "/tmp/console-screenshots"))
TIMEOUT_MS = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def console_url(broker: Any, tmp_path: Path) -> Iterator[str]:
    """``python -m console`` on a free port of 127.0.0.1, with the test users."""
    port = free_port()
    log_path = tmp_path / "console.log"
    env = {**os.environ, **TEST_ENV, **console_env(), "PYTHONPATH": str(ROOT)}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "console", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        import requests

        if proc.poll() is not None:
            raise AssertionError(f"console exited:\n{log_path.read_text()}")
        try:
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, 60, 0.2, what="console start")
    yield url
    terminate(proc)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    """A chromium context with a fresh profile, 1280 px wide."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail("chromium is required in CI (.ci/lib.sh ensure_browser)", pytrace=False)
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900}, color_scheme="dark")
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    """A screenshot of the current page, kept as <IMAGES>/console-<name>.png."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"console-{name}.png"), full_page=full_page)


def log_in(page: Any, base: str, user: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")


def status_text(page: Any) -> str:
    return str(page.locator("#run-status").inner_text()).strip()


def test_operating_the_platform_from_the_console(console_url: str, browser: Any, broker: Any, start_worker: Any,
                                                 make_tenants: Any) -> None:
    from actors.casemgmt.health import run_health_checks
    from actors.examples import example, example_error, example_progress, example_with_args
    from jobcore.context import job_context
    from tenancy.session import tenant_session

    base = console_url
    start_worker(threads=4)
    agency = make_tenants(1, product="casemgmt")[0]
    make_tenants(1, product="escrow")
    with tenant_session(agency.id) as session:
        run_health_checks(session, __import__("datetime").datetime.now(__import__("datetime").UTC))
    with job_context(tenant_id=agency.id):
        done = [example.send(i) for i in range(6)] + [example_with_args.send(1, 2, label="sum")]
        dead = example_error.send_with_options(args=("card declined by the bank",), max_retries=0)
    for m in [*done, dead]:
        wait_status(m.message_id, "FINISHED")
    page = browser.new_page()

    # Log in (and the login page itself).
    page.goto(f"{base}/")
    assert "/login" in page.url
    shot(page, "login")
    log_in(page, base, "olive")
    assert page.get_by_role("heading", name="Overview").is_visible()

    # Filter runs: the form puts the filters in the URL; only ERROR runs are listed.
    page.goto(f"{base}/runs")
    page.get_by_label("Resolution").select_option("ERROR")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r".*resolution=ERROR.*"))
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 1 and "EXAMPLE_ERROR" in rows.first.inner_text()
    page.goto(f"{base}/runs")
    assert page.locator("table.runs tbody tr").count() == len(done) + 1
    shot(page, "runs")

    # A running EXAMPLE_PROGRESS run: its bar advances while the page is open.
    running = example_progress.send(60, 0.25)
    wait_status(running.message_id, "STARTED")
    run_id = run_row(running.message_id)["id"]
    page.goto(f"{base}/runs/{run_id}")
    bar = page.locator("#run-progress")
    bar.wait_for()
    first = int(bar.get_attribute("value") or 0)
    wait_for(lambda: int(page.locator("#run-progress").get_attribute("value") or 0) > first + 30, 20, 0.25,
             what="the progress bar to advance")
    shot(page, "run")

    # Revoke it: confirmation page, then REVOKED on the run page (live refresh).
    page.get_by_role("link", name="Revoke…").click()
    page.wait_for_url(re.compile(r".*/actions/confirm\?action=revoke.*"))
    shot(page, "confirm")
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_url(f"{base}/runs/{run_id}")
    wait_for(lambda: status_text(page) == "REVOKED", 20, 0.25, what="REVOKED on the run page")
    assert count("SELECT count(*) FROM operator_actions WHERE action = 'revoke' AND operator = 'console:olive'") == 1

    # Retry an ERROR run (it hit a time limit); the new linked run completes.
    timed_out = example_progress.send_with_options(args=(4, 1.0), time_limit=500, max_retries=0)
    failed = wait_status(timed_out.message_id, "FINISHED", 30)
    assert failed["resolution"] == "ERROR"
    page.goto(f"{base}/runs/{failed['id']}")
    page.get_by_role("link", name="Retry…").click()
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(re.compile(r".*/runs/\d+$"))
    new_id = int(page.url.rsplit("/", 1)[1])
    assert new_id != failed["id"]
    assert page.locator(f'.chain a[href="/runs/{failed["id"]}"]').count() == 1
    wait_for(lambda: status_text(page) == "COMPLETED", 30, 0.25, what="the retried run to complete")
    assert count("SELECT count(*) FROM job_runs WHERE id = :n AND retry_of = :o AND resolution = 'COMPLETED'",
                 n=new_id, o=failed["id"]) == 1

    # The other pages.
    page.goto(f"{base}/")
    shot(page, "overview")
    page.goto(f"{base}/errors")
    assert page.get_by_text("card declined by the bank").first.is_visible()
    shot(page, "errors")
    page.goto(f"{base}/schedules")
    shot(page, "schedules")
    page.goto(f"{base}/tenants")
    assert page.get_by_text(agency.slug).is_visible()
    shot(page, "tenants")

    # Requeue a dead letter.
    wait_for(lambda: broker.client.zcard(broker.keys.dead("default")) >= 1, 15, what="a dead letter")
    page.goto(f"{base}/dead-letters?queue=default")
    shot(page, "dead-letters")
    page.get_by_role("link", name="Requeue…").first.click()
    page.get_by_role("button", name="Requeue").click()
    page.wait_for_url(re.compile(r".*/dead-letters\?queue=default"))
    assert page.get_by_text(re.compile(r"requeued as message")).is_visible()
    assert count("SELECT count(*) FROM operator_actions WHERE action = 'requeue' AND operator = 'console:olive'") == 1

    # Phone width: the runs page still works.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/runs")
    assert page.locator("table.runs tbody tr").count() >= 1
    shot(page, "runs-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # A viewer sees no actions, and the server refuses them even with a valid CSRF token.
    page.get_by_role("button", name="Log out").click()
    log_in(page, base, "victor")
    page.goto(f"{base}/runs/{failed['id']}")
    assert page.get_by_role("link", name="Retry…").count() == 0
    page.goto(f"{base}/dead-letters?queue=default")
    assert page.get_by_role("link", name="Requeue…").count() == 0 and page.get_by_text("operators only").count() >= 1
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    linked = count("SELECT count(*) FROM job_runs WHERE retry_of = :o", o=failed["id"])
    refused = page.request.post(f"{base}/actions/retry", form={"run": str(failed["id"]), "confirm": "yes",
                                                               "csrf_token": token or ""})
    assert refused.status == 403
    assert count("SELECT count(*) FROM job_runs WHERE retry_of = :o", o=failed["id"]) == linked


def test_a_post_without_a_csrf_token_is_refused_over_http(console_url: str, broker: Any) -> None:
    import requests

    from actors.examples import example
    from tests.support.console import csrf_of
    from tests.support.ledger import settle

    queued = example.send_with_options(args=("csrf over http",), delay=600_000)
    settle()
    run_id = run_row(queued.message_id)["id"]
    http = requests.Session()
    token = csrf_of(http.get(f"{console_url}/login", timeout=10).text)
    logged_in = http.post(f"{console_url}/login", data={"username": "olive", "password": PASSWORDS["olive"],
                                                        "csrf_token": token}, timeout=10, allow_redirects=False)
    assert logged_in.status_code == 303
    form = {"run": str(run_id), "confirm": "yes"}
    for data in (form, {**form, "csrf_token": "not-the-token"}):
        refused = http.post(f"{console_url}/actions/revoke", data=data, timeout=10, allow_redirects=False)
        assert refused.status_code == 403 and "CSRF" in refused.text
    # The same POST from another site's page (no session cookie, no token) is refused too.
    assert requests.post(f"{console_url}/actions/revoke", data=form, timeout=10,
                         allow_redirects=False).status_code == 403
    settle()
    assert run_row(queued.message_id)["status"] == "PENDING"
    assert count("SELECT count(*) FROM operator_actions") == 0
    # With the session's token it goes through (the refusals above were about the token).
    page_token = csrf_of(http.get(f"{console_url}/actions/confirm?action=revoke&run={run_id}", timeout=10).text)
    done = http.post(f"{console_url}/actions/revoke", data={**form, "csrf_token": page_token}, timeout=10,
                     allow_redirects=False)
    assert done.status_code == 303 and run_row(queued.message_id)["resolution"] == "REVOKED"

