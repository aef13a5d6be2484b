"""Tenants: product, active flag, provisioning status, failures in the last 24 h, and the
latest data-integrity health-check results of each case-management tenant."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, render_template

from console.app import state
from jobcore.settings import mask_url
from ledger.reader import tenant_outcomes
from tenancy.registry import describe_error, list_tenants

log = logging.getLogger(__name__)
bp = Blueprint("tenants", __name__)

WINDOW_S = 86400
HEALTH_TTL_S = 60.0
STATEMENT_TIMEOUT_MS = 3000


def _engines(console: Any) -> Any:
    from metrics.domain import TenantEngines

    cached = console.cache.get("tenant_engines")
    if cached is None:
        cached = console.cache["tenant_engines"] = (0.0, TenantEngines(retry_after_s=60.0))
    return cached[1]


def health_of(console: Any, tenant: Any) -> dict[str, Any]:
    """The latest health-check results of a case-management tenant (cached a minute). A
    tenant database that cannot be read gives an error entry, never hides the others."""
    from actors.casemgmt.health import latest_results

    key = f"health:{tenant.id}"
    cached = console.cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < HEALTH_TTL_S:
        return dict(cached[1])
    engines = _engines(console)
    result: dict[str, Any]
    if not engines.usable(tenant.database_url):
        result = {"error": "database unavailable (retried within a minute)", "checks": []}
    else:
        try:
            with engines.get(tenant.database_url).connect() as conn:
                conn.exec_driver_sql(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
                result = {"error": None, "checks": latest_results(conn)}
            engines.succeeded(tenant.database_url)
        except Exception as exc:
            log.warning("Tenant %s: health checks unavailable: %s", tenant.id, type(exc).__name__)
            engines.failed(tenant.database_url)
            result = {"error": describe_error(exc), "checks": []}
    console.cache[key] = (time.monotonic(), result)
    return result


@bp.get("/tenants")
def index() -> Any:
    console = state()
    outcomes = tenant_outcomes(console.control(), window_s=WINDOW_S)
    rows = []
    for t in list_tenants(active_only=False):
        health = health_of(console, t) if t.product == "casemgmt" and t.usable else None
        checks = (health or {}).get("checks", [])
        rows.append({"t": t, "database": mask_url(t.database_url), "outcomes": outcomes.get(t.id, {}),
                     "health": health, "failing_checks": sum(1 for c in checks if c["failing"] or c["errored"])})
    return render_template("tenants.html", page="tenants", rows=rows)
