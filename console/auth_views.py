"""Log in and log out."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, session, url_for

from console.app import state
from console.auth import start_session

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a local path: a login link must not redirect to another site."""
    if not target:
        return url_for("overview.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("overview.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        name = request.form.get("username", "").strip()
        principal = state().accounts.login(name, request.form.get("password", ""))
        if principal is not None:
            start_session(principal)
            log.info("Console login: %s (%s)", principal.name, principal.role)
            return redirect(_safe_next(request.form.get("next")), 303)
        log.warning("Console login failed for %r", name[:64])
        error = "Unknown user or wrong password."
    return render_template("login.html", error=error, next=request.values.get("next", "")), 401 if error else 200


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"), 303)
