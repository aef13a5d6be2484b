"""Exporter series for the reliability counters, the ledger buffer and agency health checks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from sqlalchemy import text

pytestmark = pytest.mark.integration


def scrape() -> str:
    from metrics.server import build_registry

    return generate_latest(build_registry()).decode()


def test_reliability_counters_and_ledger_buffer_are_exported_zero_filled(broker):
    text_before = scrape()
    for kind in ("reconciled", "reconcile_closed", "stuck_fetch_requeued"):
        assert f'jobs_platform_events_total{{kind="{kind}"}} 0.0' in text_before
    assert "jobs_ledger_buffer_events 0.0" in text_before
    assert "jobs_ledger_buffer_oldest_age_seconds 0.0" in text_before
    ns = broker.namespace
    broker.client.hincrby(f"{ns}:platform:stats", "reconciled", 4)
    broker.client.hincrby(f"{ns}:platform:stats", "stuck_fetch_requeued", 1)
    old_ms = int((datetime.now(UTC) - timedelta(seconds=90)).timestamp() * 1000)
    broker.client.xadd(broker.keys.ledger_stream, {"e": b"[]"}, id=f"{old_ms}-0")
    broker.client.xadd(broker.keys.ledger_stream, {"e": b"[]"})
    after = scrape()
    assert 'jobs_platform_events_total{kind="reconciled"} 4.0' in after
    assert 'jobs_platform_events_total{kind="stuck_fetch_requeued"} 1.0' in after
    assert "jobs_ledger_buffer_events 2.0" in after
    age = float(re.search(r"^jobs_ledger_buffer_oldest_age_seconds (\S+)$", after, re.M).group(1))
    assert 89 < age < 120


def test_failing_health_checks_are_countable_per_agency(broker, make_tenants):
    from metrics.domain import HEALTH_CHECK_NAMES
    from tenancy.session import tenant_session

    agency = make_tenants(1, product="casemgmt")[0]
    with tenant_session(agency.id) as s:
        run_id = s.execute(text("INSERT INTO casemgmt.health_check_runs (started_at, finished_at, checks_failed) "
                                "VALUES (now(), now(), 1) RETURNING id")).scalar_one()
        s.execute(text("INSERT INTO casemgmt.health_check_results (run_id, agency_id, check_name, status, "
                       "failing_count, checked_at) VALUES (:r, NULL, 'cases_without_agency', 'fail', 3, now()), "
                       "(:r, NULL, 'contacts_invalid_email', 'pass', 0, now())"), {"r": run_id})
    out = scrape()
    assert len(HEALTH_CHECK_NAMES) >= 5
    assert f'jobs_casemgmt_health_checks_failing{{check="cases_without_agency",tenant_id="{agency.id}"}} 3.0' in out
    for check in HEALTH_CHECK_NAMES:
        assert f'check="{check}",tenant_id="{agency.id}"' in out  # every check has a series
    assert agency.slug not in out and agency.name not in out  # ids only, never names
