"""What the exporter knows exists: actors (with their queue), schedules and their severity.

Zero-filled series come from here, so that an alert never depends on a series appearing
for the first time. Labels carry ids only (actor, queue, schedule names, tenant ids).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jobcore.settings import get_settings

log = logging.getLogger(__name__)

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")

# The escrow seed has two tables that rate the same jobs: "Danger if it fails" (used by
# periodic/schedules.py) and "What Breaks if Jobs Are Down", which is stricter for three
# of them. An alert must page whenever either table says so, so the stricter one wins.
SEED_IMPACT_FLOOR = {
    "dr_auto_approval": "CRITICAL",       # "DR auto-approvals stop"
    "report_generation": "CRITICAL",      # "report queue backs up"
    "case_close_reminders": "HIGH",       # "case close reminders missed"
    "huntington_auto_heal": "HIGH",       # "Huntington batch reconciliation breaks"
    "account_balance_check": "MEDIUM",    # "account checks skip"
    "account_balance_reminders": "MEDIUM",  # "Balance alerts not sent"
    "aws_status_check": "MEDIUM",         # "AWS status stale"
    "user_offsite_tracking": "LOW",       # "Session presence stale"
}


def effective_severity(schedule_name: str, declared: str) -> str:
    """The stricter of the schedule's declared severity and the seed's impact table."""
    floor = SEED_IMPACT_FLOOR.get(schedule_name, "LOW")
    declared = declared if declared in SEVERITIES else "HIGH"
    return max(declared, floor, key=SEVERITIES.index)


def urgency(severity: str) -> str:
    """CRITICAL/HIGH page a human; MEDIUM/LOW are warnings."""
    return "page" if severity in ("CRITICAL", "HIGH") else "warn"


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    severity: str
    grace: timedelta
    max_runtime: timedelta
    cadence: Any  # periodic.cadence.PeriodiqAdapter: next_after(datetime) -> datetime


def known_actors() -> dict[str, str]:
    """actor name -> queue name, from the application broker; ``EXPORTER_ACTORS``
    (``actor:queue,...``) is used instead when set, or when the platform cannot be built."""
    configured = get_settings().exporter_actors
    if configured:
        pairs = (item.split(":", 1) if ":" in item else (item, "") for item in configured)
        return {a.strip(): (q.strip() if q.strip() else "default") for a, q in pairs}
    try:
        import jobplatform
    except Exception:
        log.exception("Cannot build the platform; set EXPORTER_ACTORS to list actor:queue pairs")
        return {}
    return {name: actor.queue_name for name, actor in jobplatform.broker.actors.items()}


def known_schedules() -> list[ScheduleSpec]:
    """Every schedule (``periodic.schedules.all_schedules``) with its effective severity.
    ``SCHEDULES_ONLY=name,...`` (the scheduler's own subset switch) limits it to the schedules
    that the deployment's scheduler runs, so the others do not alert as late."""
    from periodic.schedules import all_schedules

    only = set(get_settings().schedules_only)
    return [ScheduleSpec(s.name, effective_severity(s.name, s.severity), s.grace, s.max_runtime, s.cadence)
            for s in all_schedules() if not only or s.name in only]
