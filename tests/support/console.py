"""Console test helpers: users with known passwords, the app on the test platform, logins."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from console.auth import hash_password

PASSWORDS = {"olive": "olive-operator-pw", "victor": "victor-viewer-pw"}
ROLES = {"olive": "operator", "victor": "viewer"}
SECRET_KEY = "test-console-secret-key-0123456789abcdef"
# A cheaper scrypt cost than production (N = 2**15) keeps logins fast in tests; the
# verification reads N from the stored hash, so the code path is the same.
_HASHES = {name: hash_password(pw, n=2**12) for name, pw in PASSWORDS.items()}


def users_setting() -> str:
    """CONSOLE_USERS for the test users (an operator and a viewer)."""
    return ",".join(f"{name}:{ROLES[name]}:{_HASHES[name]}" for name in PASSWORDS)


def console_env() -> dict[str, str]:
    return {"CONSOLE_USERS": users_setting(), "CONSOLE_SECRET_KEY": SECRET_KEY}


def make_app(**overrides: Any) -> Any:
    """The console app on the test session's platform, with the test users."""
    import jobplatform
    from console.app import create_app

    platform = jobplatform.platform
    values = {"console_users": tuple(users_setting().split(",")), "console_secret_key": SECRET_KEY, **overrides}
    settings = dataclasses.replace(platform.settings, **values)
    app = create_app(dataclasses.replace(platform, settings=settings))
    app.config["TESTING"] = True
    return app


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client: Any, user: str, password: str | None = None) -> Any:
    """Log ``user`` in through the login form; returns the response."""
    page = client.get("/login")
    return client.post("/login", data={"username": user, "password": password or PASSWORDS[user],
                                       "csrf_token": csrf_of(page.get_data(as_text=True)), "next": "/"})
