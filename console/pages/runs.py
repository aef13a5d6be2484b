"""Runs: filters in the URL, keyset pagination, live refresh of the open page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from console.app import state
from jobcore.models import RESOLUTIONS, STATUSES
from ledger.reader import RunFilter, actor_names, query_runs
from periodic.ticks import tick_message_ids

bp = Blueprint("runs", __name__)

PAGE_SIZES = (25, 50, 100, 200)
RANGES = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(hours=24),
          "7d": timedelta(days=7), "30d": timedelta(days=30)}
FILTER_KEYS = ("actor", "tenant", "status", "resolution", "range", "since", "until", "message", "fingerprint",
               "tick", "limit", "live")
_ACTORS_TTL_S = 60.0


@dataclass
class ParsedFilters:
    """The run filters of a query string, with a readable error per bad value."""

    filters: RunFilter
    values: dict[str, str]
    errors: list[str] = field(default_factory=list)
    before: int | None = None
    before_at: datetime | None = None
    limit: int = 50
    live: bool = True

    @property
    def by_time(self) -> bool:
        """A time range pages by enqueue time (an index range however old the window)."""
        return self.filters.since is not None or self.filters.until is not None


def _time(raw: str, name: str, errors: list[str]) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        errors.append(f"{name}: not a date and time ({raw[:40]!r}); use e.g. 2026-12-01T14:30 (UTC)")
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _int(raw: str, name: str, errors: list[str]) -> int | None:
    if not raw:
        return None
    if not raw.strip().isdigit() or len(raw.strip()) > 18:
        errors.append(f"{name}: not a number ({raw[:40]!r})")
        return None
    return int(raw)


def parse_filters(args: MultiDict[str, str]) -> ParsedFilters:
    """Read the filters of a runs URL (every bad value is reported, none is guessed)."""
    values = {k: args.get(k, "").strip() for k in FILTER_KEYS}
    errors: list[str] = []
    status, resolution = values["status"] or None, values["resolution"] or None
    if status and status not in STATUSES:
        errors.append(f"status: one of {', '.join(STATUSES)}")
    if resolution and resolution not in RESOLUTIONS:
        errors.append(f"resolution: one of {', '.join(RESOLUTIONS)}")
    since, until = _time(values["since"], "from", errors), _time(values["until"], "to", errors)
    if values["range"]:
        if values["range"] not in RANGES:
            errors.append(f"range: one of {', '.join(RANGES)}")
        else:
            since = datetime.now(UTC) - RANGES[values["range"]]
    message_ids = [values["message"]] if values["message"] else None
    tick = _int(values["tick"], "tick", errors)
    if tick is not None:
        message_ids = sorted(tick_message_ids(tick)) + (message_ids or [])
    limit = _int(values["limit"], "page size", errors) or 50
    filters = RunFilter(status=status, resolution=resolution, actor=values["actor"] or None,
                        tenant=_int(values["tenant"], "tenant", errors), since=since, until=until,
                        message_ids=message_ids, fingerprint=values["fingerprint"] or None)
    return ParsedFilters(filters, values, errors, before=_int(args.get("before", ""), "before", errors),
                         before_at=_time(args.get("before_at", ""), "before_at", errors),
                         limit=min(max(limit, 1), max(PAGE_SIZES)), live=values["live"] != "0")


def page_url(values: dict[str, str], **changes: Any) -> str:
    """The runs URL of ``values`` with ``changes`` (None removes a key): links keep the filters."""
    merged = {k: v for k, v in {**values, **changes}.items() if v not in (None, "")}
    return url_for("runs.index") + ("?" + urlencode(merged) if merged else "")


def known_actors(console: Any) -> list[str]:
    """Declared actors plus those in the ledger (cached a minute: it is only a datalist)."""
    import time

    cached = console.cache.get("actors")
    if cached is None or time.monotonic() - cached[0] > _ACTORS_TTL_S:
        names = set(console.broker.actors) | set(actor_names(console.control()))
        cached = console.cache["actors"] = (time.monotonic(), sorted(names))
    return list(cached[1])


@bp.get("/runs")
def index() -> Any:
    console = state()
    parsed = parse_filters(request.args)
    message = parsed.values["message"]
    if message.isdigit() and len(message) < 19:
        return redirect(url_for("run.detail", run_id=int(message)))
    rows: list[dict[str, Any]] = []
    more = False
    if not parsed.errors:
        rows = query_runs(console.control(), parsed.filters, limit=parsed.limit + 1, before_id=parsed.before,
                          by_enqueued=parsed.by_time, before_enqueued=parsed.before_at)
        more, rows = len(rows) > parsed.limit, rows[: parsed.limit]
    values = {k: v for k, v in parsed.values.items() if v}
    older = None
    if more and rows:
        last = rows[-1]
        older = page_url(values, before=last["id"], before_at=last["enqueued_at"].isoformat()
                         if parsed.by_time else None)
    here = parsed.before_at.isoformat() if parsed.before_at and parsed.by_time else None
    context = {"rows": rows, "more": more, "parsed": parsed, "values": values, "page_url": page_url,
               "older": older, "newest": page_url(values, before=None) if parsed.before else None,
               "self_url": page_url(values, before=parsed.before, before_at=here)}
    if request.headers.get("HX-Request"):
        return render_template("_runs_table.html", **context)
    return render_template("runs.html", page="runs", statuses=STATUSES, resolutions=RESOLUTIONS,
                           ranges=list(RANGES), page_sizes=PAGE_SIZES, actors=known_actors(console), **context)
