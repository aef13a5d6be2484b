"""Server-rendered SVG bar charts (no JavaScript, no chart library).

Colours come from the stylesheet (``.s-COMPLETED`` ...), so the charts follow the theme;
every bar has a ``<title>`` (a tooltip, and what a screen reader announces) and the
chart's ``aria-label`` states the totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD_BOTTOM, PAD_LEFT = 720, 140, 18, 34


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    seconds: int
    bucket_s: int
    tick_every: int  # label every n-th bucket
    fmt: str


HOUR = Window("hour", "last hour", 3600, 60, 10, "%H:%M")
DAY = Window("day", "last 24 hours", 86400, 3600, 4, "%H:00")


def bucket_starts(window: Window, now: datetime | None = None) -> list[datetime]:
    """The bucket start times of ``window``, oldest first, aligned as the SQL aligns them
    (``date_bin`` from 2000-01-01 UTC)."""
    now = now or datetime.now(UTC)
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    current = origin + timedelta(seconds=((now - origin).total_seconds() // window.bucket_s) * window.bucket_s)
    n = window.seconds // window.bucket_s
    return [current - timedelta(seconds=window.bucket_s * i) for i in range(n - 1, -1, -1)]


def _nice_max(v: int) -> int:
    if v <= 5:
        return 5
    magnitude = 10 ** (len(str(v)) - 1)
    for step in (1, 2, 5, 10):
        if v <= step * magnitude:
            return step * magnitude
    return v


def bar_chart(title: str, window: Window, series: dict[str, dict[datetime, int]], order: list[str]) -> Markup:
    """A stacked bar chart of ``series`` (name -> bucket start -> count) over ``window``."""
    starts = bucket_starts(window)
    totals = [sum(series.get(name, {}).get(b, 0) for name in order) for b in starts]
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - PAD_LEFT, HEIGHT - PAD_BOTTOM
    bar_w = plot_w / max(1, len(starts))
    sums = {name: sum(series.get(name, {}).values()) for name in order}
    label = f"{title}, {window.label}: " + ", ".join(f"{n} {name.lower().replace('_', ' ')}" for name, n in
                                                     sums.items())
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
             f'preserveAspectRatio="none">']
    for frac in (0.0, 0.5, 1.0):
        y = plot_h - frac * (plot_h - 4)
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{int(top * frac)}</text>')
    for i, b in enumerate(starts):
        x = PAD_LEFT + i * bar_w
        y = float(plot_h)
        counts = [(name, series.get(name, {}).get(b, 0)) for name in order]
        tip = escape(f"{b.strftime(window.fmt)} UTC: " + ", ".join(f"{n} {name}" for name, n in counts if n)
                     if totals[i] else f"{b.strftime(window.fmt)} UTC: none")
        parts.append(f'<g><title>{tip}</title>')
        parts.append(f'<rect class="hit" x="{x:.1f}" y="0" width="{bar_w:.1f}" height="{plot_h}"/>')
        for name, n in counts:
            if not n:
                continue
            h = n / top * (plot_h - 4)
            y -= h
            parts.append(f'<rect class="s-{escape(name)}" x="{x + 0.5:.1f}" y="{y:.1f}" '
                         f'width="{max(0.5, bar_w - 1):.1f}" height="{h:.1f}"/>')
        parts.append("</g>")
        if i % window.tick_every == 0:
            parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 4}">{b.strftime(window.fmt)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
