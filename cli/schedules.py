"""``jobctl schedules``: every schedule, when it fires next, how its last tick went."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from cli.common import current
from cli.main import json_option
from cli.output import emit

COLUMNS = ("schedule", "severity", "cadence", "next_et", "next_utc", "last_tick", "last_status", "last_outcome")


def schedule_rows() -> list[dict[str, Any]]:
    """Every schedule with its next fire time (ET and UTC) and its last tick's outcome."""
    from periodic.schedules import all_schedules
    from periodic.ticks import last_ticks

    now = datetime.now(UTC)
    et = ZoneInfo("America/New_York")
    last = last_ticks()
    rows = []
    for sc in all_schedules():
        nxt = sc.cadence.next_after(now)
        tick = last.get(sc.name, {})
        rows.append({"schedule": sc.name, "severity": sc.severity, "cadence": sc.cadence.describe(),
                     "next_et": nxt.astimezone(et).strftime("%a %m-%d %H:%M %Z"),
                     "next_utc": nxt.strftime("%m-%d %H:%M"), "last_tick": tick.get("tick_at"),
                     "last_status": tick.get("status"), "last_outcome": tick.get("outcome")})
    return rows


@click.command()
@json_option
def schedules(as_json: bool) -> None:
    """Every schedule: next fire time (ET and UTC), last tick and its outcome."""
    current()
    emit(schedule_rows(), COLUMNS, as_json)


def register(group: click.Group) -> None:
    group.add_command(schedules)
