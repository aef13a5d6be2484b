"""Schedules: cadence, next fire time in ET and UTC, the last ticks with their outcome;
missed, failed, late and stuck schedules highlighted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, render_template, request

from console.app import state
from console.health import schedule_health
from metrics.ticks import read_ticks
from periodic.schedules import all_schedules
from periodic.ticks import recent_ticks

bp = Blueprint("schedules", __name__)


def tick_outcome(tick: dict[str, Any], max_runtime_s: float, now: datetime) -> str:
    """One word for a tick: failed, missed, skipped, stuck, running, completed, errors, sent."""
    if tick["status"] in ("FAILED", "MISSED", "SKIPPED", "CLAIMED"):
        return str(tick["status"]).lower()
    if tick["failed"]:
        return "errors"
    if tick["open"] or (tick["runs"] == 0 and tick["unrecorded"]):
        started = tick["enqueued_at"] or tick["tick_at"]
        return "stuck" if (now - started).total_seconds() > max_runtime_s else "running"
    if tick["runs"] and tick["completed"] == tick["runs"]:
        return "completed"
    return "sent"


@bp.get("/schedules")
def index() -> Any:
    console = state()
    now = datetime.now(UTC)
    names = [sc.name for sc in all_schedules()]
    with console.control().connect() as conn:
        states = read_ticks(conn, names)
    health = schedule_health(states, now)
    ticks = recent_ticks(names, per_schedule=8)
    rows = []
    only = request.args.get("problems") == "1"
    for h in health:
        sc = h.schedule
        try:
            nxt: datetime | None = sc.cadence.next_after(now)
        except Exception:
            nxt = None
        tick_rows = [{**t, "outcome": tick_outcome(t, sc.max_runtime.total_seconds(), now)} for t in ticks[sc.name]]
        if only and not h.problems:
            continue
        rows.append({"h": h, "schedule": sc, "next": nxt, "ticks": tick_rows})
    return render_template("schedules.html", page="schedules", rows=rows, only=only,
                           active=console.settings.schedules_active)
