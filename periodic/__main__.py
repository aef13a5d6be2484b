"""``python -m periodic [run]`` runs the scheduler; ``python -m periodic list`` prints every
schedule with its next 3 fire times in ET and UTC."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from periodic.schedules import all_schedules


def list_schedules(count: int = 3) -> str:
    et = ZoneInfo("America/New_York")
    now = datetime.now(UTC)
    lines = []
    for s in all_schedules():
        lines.append(f"{s.name}  [{s.severity}]  {s.cadence.describe()}  -> {s.dispatcher} -> {s.target} "
                     f"per {s.product or 'tenant'}")
        for t in s.cadence.fire_times(now, count):
            lines.append(f"    {t.astimezone(et):%a %Y-%m-%d %H:%M %Z}   {t:%Y-%m-%d %H:%M} UTC")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m periodic", description="The scheduler.")
    parser.add_argument("command", nargs="?", default="run", choices=("run", "list"))
    args = parser.parse_args(argv)
    if args.command == "list":
        print(list_schedules())
        return 0
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [PID %(process)d] [%(name)s] "
                        "[%(levelname)s] %(message)s")
    from middleware.log_redaction import install_log_redaction

    install_log_redaction()
    import jobplatform
    from jobcore.errors import ServiceUnavailable
    from periodic.scheduler import run

    try:
        return run(jobplatform.broker, jobplatform.settings)
    except ServiceUnavailable as exc:  # at start: one line (password masked), no traceback
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
