"""Redaction of secrets in arguments, error messages and log lines.

Any mapping key that contains one of the configured fragments (case-insensitive:
``password``, ``token``, ``secret``, ``api_key``, ``account_number``, ...) has its
value replaced by ``[REDACTED]``, at any depth. Positional arguments are matched by
their parameter name when the actor's signature is known. Free text (exception
messages, log lines) has ``key=value`` / ``key: value`` pairs for those keys masked,
plus any exact secret value registered with :meth:`Redactor.add_secret`.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

MASK = "[REDACTED]"


class Redactor:
    """Masks secrets. Thread-safe; one instance per process is enough."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = tuple(k.lower() for k in keys)
        alternatives = "|".join(re.escape(k) for k in sorted(self.keys, key=len, reverse=True))
        # key=value, key: value, "key": "value", key='value'
        self._text_re = re.compile(
            r"""(?P<key>["']?[\w-]*(?:""" + alternatives
            + r""")[\w-]*["']?\s*[:=]\s*)(?P<q>["']?)(?!\[REDACTED\])(?P<val>[^"'\s,;&)}\]]+)""",
            re.IGNORECASE,
        ) if self.keys else None
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def is_secret_key(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        lowered = key.lower()
        return any(k in lowered for k in self.keys)

    def add_secret(self, value: str) -> None:
        """Register a literal secret (e.g. a mailbox password loaded at run time) so it is
        masked wherever it appears in text."""
        if value and len(value) >= 4:
            with self._lock:
                self._secrets.add(value)

    def value(self, value: Any) -> Any:
        """Redact a JSON-like value recursively."""
        if isinstance(value, dict):
            return {k: (MASK if self.is_secret_key(k) else self.value(v)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def arguments(self, fn: Callable[..., Any] | None, args: Iterable[Any], kwargs: dict[str, Any]
                  ) -> tuple[list[Any], dict[str, Any]]:
        """Redact an actor's arguments; positional ones by their parameter names."""
        args = list(args)
        names = _positional_names(fn) if fn is not None and args else ()
        red_args = [MASK if i < len(names) and self.is_secret_key(names[i]) else self.value(a)
                    for i, a in enumerate(args)]
        return red_args, self.value(kwargs)

    def text(self, text: str) -> str:
        """Redact free text: ``key=value`` pairs for secret keys and registered secrets."""
        if self._text_re is not None:
            text = self._text_re.sub(lambda m: f"{m.group('key')}{m.group('q')}{MASK}", text)
        if self._secrets:
            with self._lock:
                secrets = sorted(self._secrets, key=len, reverse=True)
            for secret in secrets:
                if secret in text:
                    text = text.replace(secret, MASK)
        return text


@functools.lru_cache(maxsize=1024)
def _positional_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    try:
        return tuple(p.name for p in inspect.signature(fn).parameters.values()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except (TypeError, ValueError):
        return ()


_default: Redactor | None = None
_default_lock = threading.Lock()


def get_redactor() -> Redactor:
    """The process-wide redactor built from ``REDACT_KEYS``."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                from jobcore.settings import get_settings

                _default = Redactor(get_settings().redact_keys)
    return _default
