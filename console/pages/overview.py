"""Overview: queues, live processes, throughput and error charts, health signals."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from console.app import state
from console.charts import DAY, HOUR, bar_chart
from console.health import read_overview
from ledger.reader import activity_buckets, recent_actions

bp = Blueprint("overview", __name__)

RESOLUTION_ORDER = ["COMPLETED", "ERROR", "EXPIRED", "REVOKED"]


def charts(console: Any) -> list[dict[str, Any]]:
    """Throughput (runs finished, by resolution) and failed attempts, last hour and day."""
    out = []
    for window in (HOUR, DAY):
        data = activity_buckets(console.control(), window_s=window.seconds, bucket_s=window.bucket_s)
        out.append({"window": window,
                    "throughput": bar_chart("Runs finished", window, data, RESOLUTION_ORDER),
                    "errors": bar_chart("Failed attempts", window, data, ["attempt_errors"]),
                    "finished": sum(sum(data.get(r, {}).values()) for r in RESOLUTION_ORDER),
                    "failed_attempts": sum(data.get("attempt_errors", {}).values())})
    return out


@bp.get("/")
def index() -> Any:
    console = state()
    overview = read_overview(console)
    context = {"ov": overview, "charts": charts(console), "actions": recent_actions(console.control(), 8)}
    if request.headers.get("HX-Request"):
        return render_template("_overview_body.html", **context)
    return render_template("overview.html", page="overview", **context)
