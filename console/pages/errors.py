"""Errors: failed attempts grouped by fingerprint, with the actors and tenants they hit."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from console.app import state
from ledger.reader import error_groups

bp = Blueprint("errors", __name__)

WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}


@bp.get("/errors")
def index() -> Any:
    window = request.args.get("window", "24h")
    error = None
    if window not in WINDOWS:
        error, window = f"window: one of {', '.join(WINDOWS)}", "24h"
    groups = error_groups(state().control(), window_s=WINDOWS[window])
    return render_template("errors.html", page="errors", groups=groups, window=window, windows=list(WINDOWS),
                           error=error)
