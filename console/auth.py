"""Who may use the console: users and API tokens from settings, roles, sessions, CSRF.

* **Users** (``CONSOLE_USERS``): ``name:role:hash`` entries. The hash is scrypt
  (``hashlib.scrypt``, a memory-hard KDF) in the form ``scrypt:N:r:p:salt:digest``
  (base64; no ``$``, which docker-compose and shells would expand), made by
  ``python -m console hash-password``; the password itself is never configured anywhere.
* **API tokens** (``CONSOLE_TOKENS``): ``name:role:sha256:<hex>``, the SHA-256 of a
  random 256-bit token (``python -m console new-token``); sent as
  ``Authorization: Bearer <token>``. A fast hash is right for a random token (nothing to
  guess); a KDF is for passwords people choose.
* **Roles**: ``viewer`` reads every page; ``operator`` also retries, revokes, requeues
  and discards.
* **Sessions** are Flask's signed cookies (HMAC with ``CONSOLE_SECRET_KEY``), HttpOnly,
  SameSite=Lax, valid ``CONSOLE_SESSION_HOURS``; each request checks that the user still
  exists with the same role, so removing a user from the settings ends their sessions at
  the next restart.
* **CSRF**: every POST carries the session's random token (a hidden form field or the
  ``X-CSRF-Token`` header), compared in constant time; token-authenticated requests
  carry no cookie, so they need none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import abort, g, request, session

from jobcore.errors import ConfigurationError
from jobcore.settings import Settings

ROLES = ("viewer", "operator")
RANK = {"viewer": 1, "operator": 2}

# scrypt cost: N = 2**15, r = 8, p = 1 (32 MiB, ~0.1 s per check on this machine):
# expensive for someone guessing offline, cheap for one login.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 128 * SCRYPT_R * SCRYPT_N * 2
_DKLEN = 32

F = TypeVar("F", bound=Callable[..., Any])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The stored form of ``password``: ``scrypt:N:r:p:salt:digest``."""
    if not password:
        raise ValueError("empty password")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=_DKLEN)
    return f"scrypt:{n}:{r}:{p}:{_b64(salt)}:{_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches the stored hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split(":")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=128 * int(r) * int(n) * 2, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def new_token() -> tuple[str, str]:
    """A fresh API token and its stored digest (``sha256:<hex>``)."""
    token = secrets.token_urlsafe(32)
    return token, "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """An authenticated user or token."""

    name: str
    role: str
    via: str  # "session" | "token" | "anonymous"

    def can(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


@dataclass(frozen=True)
class Accounts:
    """Users (name -> (role, hash)) and tokens (digest -> (name, role)) from settings."""

    users: dict[str, tuple[str, str]]
    tokens: dict[str, tuple[str, str]]
    anonymous_role: str

    @classmethod
    def from_settings(cls, s: Settings) -> Accounts:
        """Parse ``CONSOLE_USERS`` / ``CONSOLE_TOKENS``; a malformed entry is a
        :class:`ConfigurationError` naming its position, never echoing the entry."""
        users: dict[str, tuple[str, str]] = {}
        for i, entry in enumerate(s.console_users, 1):
            parts = entry.split(":", 2)
            if len(parts) != 3 or parts[1] not in ROLES or not parts[0] or not parts[2].startswith("scrypt:") \
                    or len(parts[2].split(":")) != 6:
                raise ConfigurationError(f"CONSOLE_USERS entry {i}: expected name:viewer|operator:scrypt:... "
                                         "(python -m console hash-password)")
            users[parts[0]] = (parts[1], parts[2])
        tokens: dict[str, tuple[str, str]] = {}
        for i, entry in enumerate(s.console_tokens, 1):
            parts = entry.split(":", 3)
            if len(parts) != 4 or parts[1] not in ROLES or parts[2] != "sha256" or len(parts[3]) != 64:
                raise ConfigurationError(f"CONSOLE_TOKENS entry {i}: expected name:viewer|operator:sha256:<hex> "
                                         "(python -m console new-token)")
            tokens[parts[3].lower()] = (parts[0], parts[1])
        return cls(users, tokens, s.console_anonymous_role if s.dev_env else "")

    def login(self, name: str, password: str) -> Principal | None:
        """The user if ``password`` is theirs. An unknown name costs a hash check too, so
        response times do not tell which names exist."""
        role, stored = self.users.get(name, ("viewer", _DUMMY_HASH))
        ok = verify_password(password, stored)
        return Principal(name, role, "session") if ok and name in self.users else None

    def from_token(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, (name, role) in self.tokens.items():
            if hmac.compare_digest(known, digest):
                return Principal(name, role, "token")
        return None

    def from_session(self, data: Any, max_age_s: float) -> Principal | None:
        name, role, issued = data.get("user"), data.get("role"), data.get("iat", 0)
        if not name or self.users.get(name, ("", ""))[0] != role or time.time() - float(issued) > max_age_s:
            return None
        return Principal(str(name), str(role), "session")


_DUMMY_HASH = hash_password("not a password of anyone", n=2**15)


def csrf_token() -> str:
    """This session's CSRF token (created on first use)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf() -> None:
    """Abort 403 unless the POST carries this session's CSRF token."""
    expected = session.get("csrf")
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    if not expected or not hmac.compare_digest(str(expected), sent):
        abort(403, description="missing or invalid CSRF token: reload the page and try again")


def authenticate(accounts: Accounts, max_age_s: float) -> Principal | None:
    """The principal of the current request: bearer token, session, or DEV_ENV anonymous."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return accounts.from_token(header[7:].strip())
    principal = accounts.from_session(session, max_age_s)
    if principal is None and session.get("user"):
        session.pop("user", None)
        session.pop("role", None)
    if principal is None and accounts.anonymous_role:
        return Principal("anonymous", accounts.anonymous_role, "anonymous")
    return principal


def start_session(principal: Principal) -> None:
    """Log ``principal`` in: a new session (new CSRF token: no fixation across a login)."""
    session.clear()
    session.permanent = True
    session.update({"user": principal.name, "role": principal.role, "iat": time.time(),
                    "csrf": secrets.token_urlsafe(32)})


def requires(role: str) -> Callable[[F], F]:
    """View decorator: 403 unless the current principal has ``role`` (or a higher one)."""
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal: Principal | None = g.get("principal")
            if principal is None or not principal.can(role):
                abort(403, description=f"this needs the {role} role")
            return view(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate
