"""How jobctl prints: tables for a terminal (rich), plain columns when piped, JSON with
``--json``; one line on stderr for an error; progress bars only on a terminal.

Terminal conventions: colours and box drawing only on a TTY (and never with
``NO_COLOR``); piped output is plain text a script or ``grep`` can read.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

T = TypeVar("T")


def is_tty() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


def cell(value: Any, width: int = 60) -> str:
    """One value as table text: ``-`` for none, compact JSON, long values cut."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dict, list)):
        value = json.dumps(value, separators=(",", ":"), default=str)
    text = str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def plain_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Fixed-width columns, a header line in capitals (for pipes, logs and tests)."""
    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)


def emit(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool, *, title: str | None = None) -> None:
    """Print ``rows``: JSON, a rich table on a terminal, or plain columns."""
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        print("(none)")
        return
    if not is_tty():
        print(plain_table(rows, columns))
        return
    table = Table(title=title, header_style="bold")
    for c in columns:
        table.add_column(c.upper(), overflow="fold")
    for r in rows:
        table.add_row(*[_styled(c, r.get(c)) for c in columns])
    console().print(table)


_STYLES = {"COMPLETED": "green", "ERROR": "bold red", "EXPIRED": "yellow", "REVOKED": "magenta",
           "STARTED": "cyan", "PENDING": "blue", "FAILED": "bold red", "MISSED": "bold red"}


def _styled(column: str, value: Any) -> str:
    text = cell(value).replace("[", r"\[")
    style = _STYLES.get(text) if column in ("status", "resolution", "last_status") else None
    return f"[{style}]{text}[/{style}]" if style else text


def emit_json(value: Any) -> None:
    print(json.dumps(value, default=str, indent=2))


def error(message: str) -> None:
    """One line on stderr (callers mask secrets first)."""
    print(f"error: {message}", file=sys.stderr)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Any]:
    """A progress bar on a terminal (on stderr, so stdout stays parseable); a no-op
    advance() otherwise."""
    if not sys.stderr.isatty():
        class _Quiet:
            def advance(self, n: int = 1) -> None:
                return None

        yield _Quiet()
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console(stderr=True), transient=True)
    with bar:
        task = bar.add_task(description, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                bar.advance(task, n)

        yield _Bar()


def track(items: Iterable[T], description: str, total: int) -> Iterator[T]:
    with progress(description, total) as bar:
        for item in items:
            yield item
            bar.advance()
