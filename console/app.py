"""The console's Flask application: configuration, authentication gate, security headers.

``create_app()`` takes the platform of this process (``jobplatform.platform`` by
default): every read and action goes through its settings, broker, keys and control
engine, and through the ledger, periodic, tenancy and metrics modules; the console has
no SQL or Redis key names of its own.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Flask, Response, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from console import formatting
from console.auth import Accounts, authenticate, check_csrf, csrf_token
from jobcore.errors import ConfigurationError, PlatformError
from jobcore.settings import Settings

log = logging.getLogger(__name__)

# Endpoints reachable without a login.
PUBLIC = {"auth.login", "static", "healthz"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class ConsoleState:
    """What every view needs: the platform and the parsed accounts."""

    platform: Any
    accounts: Accounts
    cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.platform.settings

    @property
    def broker(self) -> Any:
        return self.platform.broker

    def control(self) -> Any:
        return self.platform.control()


def state() -> ConsoleState:
    """The console state of the current app."""
    from flask import current_app

    return current_app.extensions["console"]


def _secret_key(s: Settings) -> str:
    if s.console_secret_key:
        if len(s.console_secret_key) < 32:
            raise ConfigurationError("CONSOLE_SECRET_KEY must be at least 32 characters")
        return s.console_secret_key
    if not s.dev_env:
        raise ConfigurationError("CONSOLE_SECRET_KEY is required outside DEV_ENV=1 (it signs the session cookies)")
    log.warning("CONSOLE_SECRET_KEY is not set (DEV_ENV=1): sessions end when the console restarts")
    return secrets.token_urlsafe(48)


def create_app(platform: Any = None) -> Flask:
    """Build the console for ``platform`` (default: ``jobplatform.platform``)."""
    if platform is None:
        import jobplatform

        platform = jobplatform.platform
    s: Settings = platform.settings
    accounts = Accounts.from_settings(s)
    if not accounts.users and not accounts.tokens and not accounts.anonymous_role:
        raise ConfigurationError("the console has no users: set CONSOLE_USERS (python -m console hash-password)")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(s), SESSION_COOKIE_NAME="jobs_console", SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=s.console_secure_cookie,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=s.console_session_hours), MAX_CONTENT_LENGTH=64 * 1024,
        SEND_FILE_MAX_AGE_DEFAULT=3600)
    app.extensions["console"] = ConsoleState(platform, accounts)
    formatting.install(app)
    max_age_s = s.console_session_hours * 3600

    @app.before_request
    def gate() -> Any:
        g.principal = authenticate(accounts, max_age_s)
        if request.method == "POST" and (g.principal is None or g.principal.via != "token"):
            check_csrf()
        if g.principal is None and request.endpoint not in PUBLIC:
            if request.method == "GET" and not request.headers.get("HX-Request"):
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            return Response("login required\n", 401, mimetype="text/plain")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.context_processor
    def inject() -> dict[str, Any]:
        return {"principal": g.get("principal"), "csrf_token": csrf_token, "namespace": s.redis_namespace}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.headers.get("HX-Request") or request.accept_mimetypes.best == "text/plain":
            return Response(f"{exc.code} {exc.description}\n", exc.code or 500, mimetype="text/plain")
        return render_template("error.html", code=exc.code, title=exc.name, message=exc.description), exc.code

    @app.errorhandler(PlatformError)
    def platform_error(exc: PlatformError) -> Any:
        # Platform errors are operator-facing and carry no secrets (the ledger and the
        # tenancy registry mask them); the redactor runs once more all the same.
        message = formatting.redact_text(str(exc))
        return render_template("error.html", code=409, title=type(exc).__name__, message=message), 409

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    from console.actions import bp as actions_bp
    from console.auth_views import bp as auth_bp
    from console.pages.dead_letters import bp as dead_bp
    from console.pages.errors import bp as errors_bp
    from console.pages.overview import bp as overview_bp
    from console.pages.run_detail import bp as run_bp
    from console.pages.runs import bp as runs_bp
    from console.pages.schedules import bp as schedules_bp
    from console.pages.tenants import bp as tenants_bp

    for bp in (auth_bp, overview_bp, runs_bp, run_bp, errors_bp, schedules_bp, tenants_bp, dead_bp, actions_bp):
        app.register_blueprint(bp)
    return app
