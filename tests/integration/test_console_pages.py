"""The console's pages and actions through Flask's test client, on the real control
database and Redis (workers as subprocesses where runs must actually run)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, wait_for
from tests.support.console import csrf_of, login, make_app
from tests.support.ledger import count, run_row, settle, wait_status

pytestmark = pytest.mark.integration

PAGES = ("/", "/runs", "/errors", "/schedules", "/tenants", "/dead-letters")


@pytest.fixture()
def app(broker: Any) -> Any:
    return make_app()


def operator(app: Any) -> Any:
    client = app.test_client()
    assert login(client, "olive").status_code == 303
    return client


def viewer(app: Any) -> Any:
    client = app.test_client()
    assert login(client, "victor").status_code == 303
    return client


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def test_every_page_needs_a_login_and_a_wrong_password_is_refused(app: Any) -> None:
    client = app.test_client()
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    assert client.get("/runs", headers={"HX-Request": "true"}).status_code == 401
    assert login(client, "olive", "wrong password").status_code == 401
    assert login(client, "nobody", "whatever").status_code == 401
    assert client.get("/").status_code == 302
    assert login(client, "olive").status_code == 303
    for path in PAGES:
        assert client.get(path).status_code == 200, path


def test_a_login_redirect_never_leaves_the_site(app: Any) -> None:
    client = app.test_client()
    page = client.get("/login")
    for target, expected in (("https://evil.example/", "/"), ("//evil.example/x", "/"), ("/runs?actor=X",
                                                                                            "/runs?actor=X")):
        response = client.post("/login", data={"username": "olive", "password": "olive-operator-pw", "next": target,
                                               "csrf_token": csrf_of(text(page))})
        assert response.status_code == 303 and response.headers["Location"] == expected
        page = client.get("/login")


def test_the_console_refuses_to_start_without_users_or_a_secret_key(broker: Any) -> None:
    from jobcore.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no users"):
        make_app(console_users=())
    with pytest.raises(ConfigurationError, match="CONSOLE_SECRET_KEY is required"):
        make_app(console_secret_key="", dev_env=False, bank_gateway_url="https://x", internal_api_url="https://x")


def test_runs_filters_and_keyset_pages(app: Any) -> None:
    from actors.examples import example, example_error
    from jobcore.context import job_context

    with job_context(tenant_id=7):
        sent = [example.send_with_options(args=(i,), delay=600_000) for i in range(23)]
    errors = [example_error.send_with_options(args=("x",), delay=600_000) for _ in range(4)]
    settle()
    client = viewer(app)

    def ids(html: str) -> list[int]:
        return [int(i) for i in re.findall(r'<th scope="row"><a href="/runs/(\d+)">', html)]

    only_errors = ids(text(client.get("/runs?actor=EXAMPLE_ERROR")))
    assert sorted(only_errors) == sorted(run_row(m.message_id)["id"] for m in errors)
    assert len(ids(text(client.get("/runs?tenant=7&status=PENDING")))) == 23
    assert ids(text(client.get(f"/runs?message={sent[3].message_id}"))) == [run_row(sent[3].message_id)["id"]]
    assert ids(text(client.get("/runs?resolution=ERROR"))) == []
    assert ids(text(client.get("/runs?until=2001-01-01T00:00&actor=EXAMPLE"))) == []
    assert len(ids(text(client.get("/runs?since=2001-01-01T00:00&until=2999-01-01T00:00&actor=EXAMPLE")))) == 23
    # Keyset pages of 10: newest first, no gaps, no repeats, each page links the next.
    seen: list[int] = []
    url = "/runs?actor=EXAMPLE&limit=10"
    while url:
        html = text(client.get(url))
        seen += ids(html)
        found = re.search(r'href="([^"]+)" rel="next"', html)
        url = found.group(1).replace("&amp;", "&") if found else ""
        assert "OFFSET" not in url.upper()
    assert seen == sorted((run_row(m.message_id)["id"] for m in sent), reverse=True)
    # A time range pages by enqueue time, with its own keyset (enqueued_at, id).
    seen, url = [], "/runs?actor=EXAMPLE&limit=10&since=2001-01-01T00:00"
    while url:
        html = text(client.get(url))
        seen += ids(html)
        found = re.search(r'href="([^"]+)" rel="next"', html)
        url = found.group(1).replace("&amp;", "&") if found else ""
        assert not found or "before_at=" in url
    assert sorted(seen) == sorted(run_row(m.message_id)["id"] for m in sent) and len(set(seen)) == 23
    # The live-refresh fragment is the table alone.
    fragment = text(client.get("/runs?actor=EXAMPLE_ERROR", headers={"HX-Request": "true"}))
    assert fragment.startswith('<div id="runs-table"') and 'hx-trigger="every 5s"' in fragment
    assert "<html" not in fragment


def test_bad_filter_values_get_a_clear_error(app: Any) -> None:
    client = viewer(app)
    html = text(client.get("/runs?tenant=abc&status=DONE&since=yesterday"))
    assert "tenant: not a number" in html and "status: one of PENDING, STARTED, FINISHED" in html
    assert "from: not a date and time" in html
    assert client.get("/errors?window=99y").status_code == 200


def test_run_detail_shows_attempts_errors_chain_tick_and_actions(app: Any, start_worker: Any) -> None:
    from actors.examples import example_error
    from periodic.ticks import claim_tick, mark_enqueued

    start_worker()
    failed = example_error.send_with_options(args=("console detail failure",), max_retries=1, min_backoff=100,
                                             max_backoff=100)
    tick_id = claim_tick("report_generation", datetime(2026, 12, 1, 14, 0, tzinfo=UTC), "test-scheduler")
    assert tick_id is not None
    mark_enqueued(tick_id, failed.message_id)
    row = wait_status(failed.message_id, "FINISHED", 60)
    client = operator(app)
    html = text(client.get(f"/runs/{row['id']}"))
    assert "Attempt 1 failed — retry scheduled" in html and "Attempt 2 failed — final" in html
    assert "console detail failure" in html and "raise ExampleError" in html
    assert "report_generation" in html and f"/runs?tick={tick_id}" in html
    assert f'/actions/confirm?action=retry&amp;run={row["id"]}' in html
    # The tick's runs page lists the run.
    assert f'href="/runs/{row["id"]}"' in text(client.get(f"/runs?tick={tick_id}"))
    # Errors page: one group, linked to its runs.
    errors = text(client.get("/errors"))
    assert "ExampleError" in errors
    fingerprint = re.search(r"/runs\?fingerprint=([0-9a-f]+)", errors).group(1)
    assert f'href="/runs/{row["id"]}"' in text(client.get(f"/runs?fingerprint={fingerprint}"))
    # A viewer sees no action button.
    assert "/actions/confirm" not in text(viewer(app).get(f"/runs/{row['id']}"))


def test_a_post_without_a_csrf_token_is_refused(app: Any) -> None:
    from actors.examples import example

    queued = example.send_with_options(args=("csrf",), delay=600_000)
    settle()
    run_id = run_row(queued.message_id)["id"]
    client = operator(app)
    refused = client.post("/actions/revoke", data={"run": run_id, "confirm": "yes"})
    assert refused.status_code == 403 and "CSRF" in text(refused)
    refused = client.post("/actions/revoke", data={"run": run_id, "confirm": "yes", "csrf_token": "forged"})
    assert refused.status_code == 403
    settle()
    assert run_row(queued.message_id)["status"] == "PENDING"
    assert count("SELECT count(*) FROM operator_actions") == 0


def test_revoke_through_the_confirmation_step_is_recorded_with_the_console_user(app: Any) -> None:
    from actors.examples import example

    queued = example.send_with_options(args=("revoke me",), delay=600_000)
    settle()
    run_id = run_row(queued.message_id)["id"]
    client = operator(app)
    page = client.get(f"/actions/confirm?action=revoke&run={run_id}")
    assert page.status_code == 200 and "Revoke run #" in text(page)
    token = csrf_of(text(page))
    assert client.post("/actions/revoke", data={"run": run_id, "csrf_token": token}).status_code == 400
    done = client.post("/actions/revoke", data={"run": run_id, "confirm": "yes", "csrf_token": token})
    assert done.status_code == 303 and done.headers["Location"] == f"/runs/{run_id}"
    row = run_row(queued.message_id)
    assert (row["status"], row["resolution"]) == ("FINISHED", "REVOKED")
    assert count("SELECT count(*) FROM operator_actions WHERE action = 'revoke' AND operator = 'console:olive' "
                 "AND run_id = :r", r=run_id) == 1
    assert "Revoked: the queued run will not start." in text(client.get(f"/runs/{run_id}"))


def test_a_viewer_cannot_act(app: Any) -> None:
    from actors.examples import example

    queued = example.send_with_options(args=("viewer",), delay=600_000)
    settle()
    run_id = run_row(queued.message_id)["id"]
    client = viewer(app)
    assert client.get(f"/actions/confirm?action=revoke&run={run_id}").status_code == 403
    token = csrf_of(text(client.get("/")))
    assert client.post("/actions/revoke", data={"run": run_id, "confirm": "yes", "csrf_token": token}
                       ).status_code == 403
    assert run_row(queued.message_id)["status"] == "PENDING"


def test_money_actors_need_their_name_typed(app: Any) -> None:
    import jobplatform

    actor = jobplatform.broker.get_actor("PROCESS_HUNTINGTON_BATCH")
    queued = actor.send_with_options(args=(41,), delay=600_000)
    settle()
    run_id = run_row(queued.message_id)["id"]
    client = operator(app)
    page = text(client.get(f"/actions/confirm?action=revoke&run={run_id}"))
    assert "PROCESS_HUNTINGTON_BATCH moves money" in page and 'name="money_confirm"' in page
    base = {"run": run_id, "confirm": "yes", "csrf_token": csrf_of(page)}
    assert client.post("/actions/revoke", data=base).status_code == 400
    assert client.post("/actions/revoke", data={**base, "money_confirm": "yes"}).status_code == 400
    settle()
    assert run_row(queued.message_id)["status"] == "PENDING"
    assert client.post("/actions/revoke", data={**base, "money_confirm": "PROCESS_HUNTINGTON_BATCH"}
                       ).status_code == 303
    assert run_row(queued.message_id)["resolution"] == "REVOKED"


def test_retry_requeue_and_discard(app: Any, broker: Any, start_worker: Any) -> None:
    from actors.examples import example_error

    start_worker()
    failed = [example_error.send_with_options(args=(f"dead {i}",), max_retries=0) for i in range(3)]
    rows = [wait_status(m.message_id, "FINISHED") for m in failed]
    wait_for(lambda: broker.client.zcard(broker.keys.dead("default")) == 3, 15, what="dead letters")
    client = operator(app)
    # Retry: a new run linked to the old one; the audit row names the console user.
    page = text(client.get(f"/actions/confirm?action=retry&run={rows[0]['id']}"))
    done = client.post("/actions/retry", data={"run": rows[0]["id"], "confirm": "yes", "csrf_token": csrf_of(page)})
    assert done.status_code == 303
    new_id = int(done.headers["Location"].rsplit("/", 1)[1])
    assert count("SELECT count(*) FROM job_runs WHERE id = :i AND retry_of = :o", i=new_id, o=rows[0]["id"]) == 1
    assert f'href="/runs/{new_id}"' in text(client.get(f"/runs/{rows[0]['id']}"))  # the chain, both ways
    assert f'href="/runs/{rows[0]["id"]}"' in text(client.get(f"/runs/{new_id}"))
    # Dead letters: requeue one, discard one.
    html = text(client.get("/dead-letters?queue=default"))
    redis_ids = re.findall(r"action=requeue&amp;queue=default&amp;ref=([^\"&]+)", html)
    assert len(redis_ids) >= 3
    page = text(client.get(f"/actions/confirm?action=requeue&queue=default&ref={redis_ids[0]}"))
    assert client.post("/actions/requeue", data={"queue": "default", "ref": redis_ids[0], "confirm": "yes",
                                                 "csrf_token": csrf_of(page)}).status_code == 303
    page = text(client.get(f"/actions/confirm?action=discard&queue=default&ref={redis_ids[1]}"))
    assert client.post("/actions/discard", data={"queue": "default", "ref": redis_ids[1], "confirm": "yes",
                                                 "csrf_token": csrf_of(page)}).status_code == 303
    for action in ("retry", "requeue", "discard"):
        assert count("SELECT count(*) FROM operator_actions WHERE action = :a AND operator = 'console:olive'",
                     a=action) == 1
    assert not broker.client.hexists(broker.keys.dead_messages("default"), redis_ids[1])


def test_tenants_page_shows_health_and_survives_a_broken_tenant(app: Any, make_tenants: Any) -> None:
    from actors.casemgmt.health import run_health_checks
    from tenancy.session import tenant_session

    agencies = make_tenants(2, product="casemgmt", down={1})
    escrow = make_tenants(1, product="escrow")
    with tenant_session(agencies[0].id) as session:
        run_health_checks(session, datetime.now(UTC))
    html = text(viewer(app).get("/tenants"))
    assert agencies[0].slug in html and agencies[1].slug in html and escrow[0].slug in html
    assert "cases_without_agency" in html and "0 of 1 checks failing" in html
    assert "OperationalError" in html or "database unavailable" in html


def test_overview_shows_queues_processes_and_signals(app: Any, start_worker: Any) -> None:
    from actors.examples import example

    start_worker()
    wait_status(example.send("overview").message_id, "FINISHED")
    html = text(viewer(app).get("/"))
    for label in ("Backlog age", "Error ratio", "Workers alive", "Schedulers alive", "Schedules missed",
                  "Schedules failed", "Runs finished, last hour", "Failed attempts, last 24 hours"):
        assert label in html, label
    assert re.search(r'<span class="sig-name">Workers alive</span>\s*<span class="sig-value">1</span>', html)
    assert "<svg" in html and "1 completed" in html


def test_the_overview_thresholds_are_those_of_the_alert_rules() -> None:
    import yaml

    from console import health

    rules = {r["alert"]: r["expr"] for g in yaml.safe_load((ROOT / "metrics/alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    assert f"> {health.BACKLOG_AGE_S}" in rules["JobBacklogAge"]
    assert f"> {health.BACKLOG_READY}" in rules["JobBacklogCount"]
    assert f"> {health.ERROR_RATIO}" in rules["JobErrorSpike"] and f">= {health.ERROR_MIN}" in rules["JobErrorSpike"]
    assert f"> {health.LEDGER_BUFFER_AGE_S}" in rules["LedgerBufferBacklog"]


def test_static_assets_are_vendored_with_pinned_versions() -> None:
    vendor = Path(ROOT / "console/static/vendor")
    readme = (vendor / "README.md").read_text()
    for asset in vendor.glob("*.js"):
        assert asset.name in readme
    base = (ROOT / "console/templates/base.html").read_text()
    assert "vendor/htmx-2.0.11.min.js" in base and not list(ROOT.glob("console/**/node_modules"))
