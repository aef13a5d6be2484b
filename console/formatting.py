"""Template filters: times in UTC and US Eastern, durations, redacted JSON and text.

Everything the ledger stores was redacted when it was recorded; the filters that print
stored values (``pretty``, ``redact``) run the platform's redactor once more, so a page
can never show more than the ledger meant to keep.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask

from jobcore.redaction import get_redactor

ET = ZoneInfo("America/New_York")


def redact_text(text: str) -> str:
    return get_redactor().text(text)


def pretty(value: Any) -> str:
    """Indented JSON of a stored value, redacted."""
    if value is None:
        return "—"
    return json.dumps(get_redactor().value(value), indent=2, default=str, ensure_ascii=False, sort_keys=True)


def compact(value: Any, limit: int = 80) -> str:
    """One-line JSON of a stored value, redacted and shortened."""
    if value is None or value in ([], {}):
        return ""
    text = json.dumps(get_redactor().value(value), default=str, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def utc(value: datetime | None, seconds: bool = True) -> str:
    if value is None:
        return "—"
    return _aware(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC"


def eastern(value: datetime | None) -> str:
    if value is None:
        return "—"
    return _aware(value).astimezone(ET).strftime("%a %b %d %H:%M %Z")


def iso(value: datetime | None) -> str:
    return "" if value is None else _aware(value).astimezone(UTC).isoformat(timespec="seconds")


def seconds(value: float | None) -> str:
    """A duration in seconds, human-sized (850 ms, 12.3 s, 4 min 2 s, 3 h 10 min, 2 d 4 h)."""
    if value is None:
        return "—"
    v = float(value)
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 60:
        return f"{v:.1f} s"
    if v < 3600:
        return f"{int(v // 60)} min {int(v % 60)} s"
    if v < 86400:
        return f"{int(v // 3600)} h {int(v % 3600 // 60)} min"
    return f"{int(v // 86400)} d {int(v % 86400 // 3600)} h"


def millis(value: float | None) -> str:
    return "—" if value is None else seconds(float(value) / 1000)


def ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    return seconds(max(0.0, (datetime.now(UTC) - _aware(value)).total_seconds())) + " ago"


def install(app: Flask) -> None:
    """Register the filters on ``app``."""
    app.jinja_env.filters.update(utc=utc, eastern=eastern, iso=iso, seconds=seconds, millis=millis, ago=ago,
                                 pretty=pretty, compact=compact, redact=redact_text)
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
