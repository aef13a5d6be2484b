"""Run detail: context, arguments, result, live progress, attempts timeline, retry chain,
the schedule tick that produced the run, and its audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, abort, render_template, request

from console.actions import available_actions, is_money_actor
from console.app import state
from jobcore.errors import RunNotFound
from ledger.reader import get_run, operator_actions, retry_chain, run_errors
from periodic.ticks import tick_of_message

bp = Blueprint("run", __name__)


def progress_of(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's progress as a fraction 0..1 and a message, if it reported any."""
    value = run.get("progress")
    if run["status"] == "FINISHED" and run.get("resolution") == "COMPLETED" and value is not None:
        return {"fraction": 1.0, "message": value.get("message") if isinstance(value, dict) else None}
    if isinstance(value, dict) and isinstance(value.get("fraction"), (int, float)):
        return {"fraction": min(1.0, max(0.0, float(value["fraction"]))), "message": value.get("message")}
    if isinstance(value, (int, float)):
        return {"fraction": min(1.0, max(0.0, float(value))), "message": None}
    return None


def timeline(run: dict[str, Any], errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every recorded moment of the run, in time order, with its offset from the enqueue."""
    events: list[dict[str, Any]] = [{"at": run["enqueued_at"], "kind": "enqueued", "label": "Enqueued"}]
    for e in errors:
        events.append({"at": e["created_at"], "kind": "error", "attempt": e["attempt"], "error": e,
                       "label": f"Attempt {e['attempt']} failed" + (" — retry scheduled" if e["will_retry"]
                                                                    else " — final")})
    if run.get("started_at"):
        events.append({"at": run["started_at"], "kind": "started",
                       "label": f"Attempt {run['attempts']} started" + (f" on {run['worker_id']}"
                                                                        if run.get("worker_id") else "")})
    if run.get("retry_at") and run["status"] != "FINISHED":
        events.append({"at": run["retry_at"], "kind": "retry", "label": "Next attempt due"})
    if run.get("revoke_requested_at"):
        events.append({"at": run["revoke_requested_at"], "kind": "revoke", "label": "Revoke requested"})
    if run.get("finished_at"):
        events.append({"at": run["finished_at"], "kind": f"finished s-{run['resolution']}",
                       "label": f"Finished {run['resolution']}"})
    start: datetime = run["enqueued_at"]
    events.sort(key=lambda ev: (ev["at"], ev["kind"] != "enqueued"))
    for ev in events:
        ev["offset_s"] = (ev["at"] - start).total_seconds()
    return events


def _load(run_id: int) -> dict[str, Any]:
    try:
        return get_run(state().control(), run_id)
    except RunNotFound:
        abort(404, description=f"no run {run_id} (it may have been pruned by retention)")


@bp.get("/runs/<int:run_id>")
def detail(run_id: int) -> Any:
    console = state()
    run = _load(run_id)
    engine = console.control()
    errors = run_errors(engine, run["id"])
    ancestors, retries = retry_chain(engine, run)
    return render_template(
        "run.html", page="runs", run=run, errors=errors, events=timeline(run, errors), ancestors=ancestors,
        retries=retries, tick=tick_of_message(run["message_id"]), audit=operator_actions(engine, run["message_id"]),
        progress=progress_of(run), actions=available_actions(run, retries), money=is_money_actor(run["actor_name"]))


@bp.get("/runs/<int:run_id>/live")
def live(run_id: int) -> Any:
    """The status and progress fragment, polled while the run is open."""
    run = _load(run_id)
    if not request.headers.get("HX-Request"):
        abort(400, description="this is a page fragment")
    return render_template("_run_live.html", run=run, progress=progress_of(run))
