"""Every scheduled job, as data.

Each schedule has a periodic *dispatcher* actor (declared in :mod:`periodic.actors`,
named ``dispatcher``) that the scheduler sends once per tick; the dispatcher fans out
one message to ``target`` per active tenant of ``product``. Severity is the stricter of
the escrow seed's two tables ("Danger if it fails" and "What breaks if jobs are down"):
DR auto-approval and report generation are CRITICAL there, case close reminders HIGH.
CRITICAL/HIGH page, MEDIUM/LOW warn.

Case-management cadences that the seed leaves open (the legacy cron runner ran them
"overnight" or on every pass) are chosen here:

* notifications every 15 minutes (reminders and upcoming events are due at minute
  granularity; each is sent once by its own sent-marker, so a frequent cadence is safe);
* data-integrity health checks daily at 03:00 ET (after the aggregations' quiet hours);
* overnight aggregations daily at 02:15 ET (a 02:xx job shows the DST behaviour: on the
  spring-forward day it runs once, at 03:15 EDT);
* session/token cleanup hourly at :40.

Catch-up policy (``catch_up``): what a scheduler that comes back after an outage sends.
``period``: the newest missed tick is sent as long as its period lasts (until the next
tick is due), for jobs that are safe to run late and to repeat (each is idempotent per
day, case or request) and whose tick would otherwise be lost for a whole day or week;
older ticks of the outage are recorded MISSED. ``grace``: only ticks at most ``grace``
late are sent, for frequent jobs whose next tick does the same work minutes later.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from datetime import date, time, timedelta
from functools import lru_cache

from periodic.cadence import Cron, EveryNDays, EverySeconds, PeriodiqAdapter, every_minutes

ET = "America/New_York"
#: Catch-up policies (see the module docstring).
CATCH_UP_GRACE = "grace"
CATCH_UP_PERIOD = "period"
CATCH_UP_POLICIES = (CATCH_UP_GRACE, CATCH_UP_PERIOD)
#: Fan-out: one run per active tenant of the product, or one platform-wide run (no tenant)
#: plus one per tenant of the product that has its own storage (tenants.storage).
FAN_OUT_TENANTS = "tenants"
FAN_OUT_PLATFORM = "platform"
FAN_OUTS = (FAN_OUT_TENANTS, FAN_OUT_PLATFORM)
# A Sunday; the 3-day balance reminders count their cadence from it.
BALANCE_REMINDER_ANCHOR = date(2026, 1, 4)


@dataclass(frozen=True)
class Schedule:
    """One scheduled job."""

    name: str
    dispatcher: str            # actor_name of the periodic dispatcher actor
    target: str                # per-tenant actor the dispatcher fans out to
    cadence: PeriodiqAdapter
    product: str | None        # tenants of this product; None: every active tenant
    severity: str              # CRITICAL | HIGH | MEDIUM | LOW
    grace: timedelta           # how late a tick may still be caught up / is not yet "late"
    max_runtime: timedelta     # a tick running longer than this is stuck
    description: str = ""
    catch_up: str = CATCH_UP_GRACE  # "grace" | "period" (module docstring)
    fan_out: str = FAN_OUT_TENANTS  # "tenants" | "platform" (FAN_OUT_* above)

    def __post_init__(self) -> None:
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ValueError(f"schedule {self.name}: catch_up must be one of {CATCH_UP_POLICIES}, "
                             f"not {self.catch_up!r}")
        if self.fan_out not in FAN_OUTS:
            raise ValueError(f"schedule {self.name}: fan_out must be one of {FAN_OUTS}, not {self.fan_out!r}")


def _email_sync_minutes() -> int:
    from jobcore.settings import get_settings

    return get_settings().email_sync_interval_min


def production_schedules() -> list[Schedule]:
    """The schedules of both seeds (escrow: 002, case management: 000)."""
    m = timedelta(minutes=1)
    period, grace = CATCH_UP_PERIOD, CATCH_UP_GRACE
    return [
        # --- escrow platform (seed 002) --------------------------------------------------
        # Period: a scheduler outage over 06:00 must not skip the day's approvals. A late run
        # approves what is due by then, each request once (conditional on its version).
        Schedule("dr_auto_approval", "periodic_dr_auto_approval", "job_dr_approval", Cron("0 6 * * *", ET),
                 "escrow", "CRITICAL", 60 * m, 30 * m, "Auto-approve disbursement requests whose window expired",
                 catch_up=period),
        # Period: one reminder row per (case, tick day), so a late or repeated run reminds once;
        # the run reminds the cases of its tick's day, even when caught up after midnight.
        Schedule("case_close_reminders", "periodic_case_close_reminders", "job_case_close_reminders",
                 Cron("0 6 * * *", ET), "escrow", "HIGH", 60 * m, 30 * m, "Close reminders to Escrow Specialists",
                 catch_up=period),
        # Period: one finding per (case, check day); otherwise a week without the check.
        Schedule("account_balance_check", "periodic_account_balance_check", "job_account_balance_check",
                 Cron("0 1 * * 0", ET), "escrow", "MEDIUM", 120 * m, 60 * m, "Weekly minimum balance check",
                 catch_up=period),
        # Period: one reminder per (case, recipient, tick day); otherwise three days without one.
        Schedule("account_balance_reminders", "periodic_account_balance_reminders", "job_account_balance_reminders",
                 EveryNDays(3, time(1, 0), BALANCE_REMINDER_ANCHOR, ET), "escrow", "MEDIUM", 120 * m, 60 * m,
                 "Minimum balance reminders every 3 days", catch_up=period),
        # Grace: the every-minute run works through the whole queue; the next one does it.
        Schedule("report_generation", "periodic_report_generation", "job_report_generation", every_minutes(1),
                 "escrow", "CRITICAL", 3 * m, 10 * m, "Process pending report requests", catch_up=grace),
        # Grace: a status older than the next check's is worthless. Platform: S3, CloudFront and
        # the dashboard are the platform's, so one probe and one post per tick, plus one per
        # tenant with its own storage (not one per tenant, N identical probes).
        Schedule("aws_status_check", "periodic_aws_status_check", "job_aws_status_check", every_minutes(5),
                 "escrow", "MEDIUM", 5 * m, 4 * m, "S3/CloudFront connectivity to the status dashboard",
                 catch_up=grace, fan_out=FAN_OUT_PLATFORM),
        Schedule("user_offsite_tracking", "periodic_user_offsite_tracking", "job_user_offsite_tracking",
                 every_minutes(30), "escrow", "LOW", 15 * m, 10 * m, "Mark users off-site, clear viewing caches",
                 catch_up=grace),
        # Grace: each run reconciles every candidate; a burst of late runs would only queue up.
        Schedule("huntington_auto_heal", "auto_heal_huntington_batches_periodic", "auto_heal_huntington_batches",
                 every_minutes(1), "escrow", "HIGH", 3 * m, 10 * m, "Reconcile false-failure Huntington items",
                 catch_up=grace),
        # --- case management (seed 000) -------------------------------------------------
        # Grace: incremental by mailbox cursor, the next sync fetches everything new.
        Schedule("email_sync", "EMAIL_SYNC_PERIODIC", "EMAIL_SYNC_AGENCY", every_minutes(_email_sync_minutes()),
                 "casemgmt", "HIGH", 15 * m, 30 * m, "Sync email for every agency", catch_up=grace),
        # Grace: the next run sends everything due (each notification once).
        Schedule("agency_notifications", "periodic_agency_notifications", "agency_notifications",
                 every_minutes(15), "casemgmt", "MEDIUM", 15 * m, 10 * m, "Scheduled reminders and upcoming events",
                 catch_up=grace),
        # Period: results are per run, a late run checks the same data; otherwise a day without.
        Schedule("agency_health_checks", "periodic_agency_health_checks", "agency_health_checks",
                 Cron("0 3 * * *", ET), "casemgmt", "MEDIUM", 120 * m, 60 * m, "Data-integrity health checks",
                 catch_up=period),
        # Period: idempotent per agency and local day (recomputes the last complete days).
        Schedule("agency_overnight_aggregations", "periodic_agency_overnight_aggregations",
                 "agency_overnight_aggregations", Cron("15 2 * * *", ET), "casemgmt", "MEDIUM", 120 * m, 60 * m,
                 "Per-agency daily statistics", catch_up=period),
        # Grace: the next hourly run deletes whatever expired meanwhile.
        Schedule("agency_cleanup", "periodic_agency_cleanup", "agency_cleanup", Cron("40 * * * *", ET),
                 "casemgmt", "LOW", 30 * m, 20 * m, "Delete expired sessions and tokens", catch_up=grace),
    ]


@lru_cache(maxsize=1)
def all_schedules() -> tuple[Schedule, ...]:
    """Production schedules plus those of ``EXTRA_SCHEDULES_MODULE`` (tests, local tools),
    which must define ``SCHEDULES: list[Schedule]``."""
    schedules = production_schedules()
    extra = os.environ.get("EXTRA_SCHEDULES_MODULE")
    if extra:
        schedules += list(importlib.import_module(extra).SCHEDULES)
    names = [s.name for s in schedules]
    if len(names) != len(set(names)):
        raise ValueError("duplicate schedule names")
    return tuple(schedules)


def by_name(name: str) -> Schedule:
    for s in all_schedules():
        if s.name == name:
            return s
    raise KeyError(name)


__all__ = ["CATCH_UP_GRACE", "CATCH_UP_PERIOD", "FAN_OUT_PLATFORM", "FAN_OUT_TENANTS", "Cron", "EveryNDays",
           "EverySeconds", "Schedule", "all_schedules", "by_name", "every_minutes", "production_schedules"]
