"""Every production schedule is wired to declared actors (issue 14, item 10): its
dispatcher and its target are actors of the built platform broker, the dispatcher is
periodic on the schedule's own cadence, and the scheduler process picks it up."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from periodic.cadence import EverySeconds
from periodic.schedules import Schedule, production_schedules

pytestmark = pytest.mark.integration


def wiring_faults(broker: Any, schedules: list[Schedule]) -> list[str]:
    """What is wrong with each schedule's wiring on ``broker`` (empty: nothing)."""
    faults = []
    for s in schedules:
        dispatcher = broker.actors.get(s.dispatcher)
        if dispatcher is None:
            faults.append(f"{s.name}: dispatcher {s.dispatcher!r} is not declared")
        else:
            if dispatcher.options.get("periodic") != s.cadence:
                faults.append(f"{s.name}: dispatcher {s.dispatcher!r} is not periodic on {s.cadence.describe()}")
            if dispatcher.queue_name != "periodic":
                faults.append(f"{s.name}: dispatcher {s.dispatcher!r} is on queue {dispatcher.queue_name!r}")
            if not isinstance(s.cadence, EverySeconds) and dispatcher.options.get("max_age") != 0:
                faults.append(f"{s.name}: a daily/weekly dispatcher must never expire")
        target = broker.actors.get(s.target)
        if target is None:
            faults.append(f"{s.name}: target {s.target!r} is not declared")
        elif not target.fn.__module__.startswith("actors."):
            faults.append(f"{s.name}: target {s.target!r} comes from {target.fn.__module__}, not the product code")
        if s.product not in ("escrow", "casemgmt"):
            faults.append(f"{s.name}: product {s.product!r}")
    return faults


def test_every_production_schedules_dispatcher_and_target_are_declared_actors(broker):
    assert wiring_faults(broker, production_schedules()) == []


def test_the_wiring_check_finds_a_renamed_target_and_a_missing_dispatcher(broker):
    """The check above is not vacuous: a schedule pointing at an undeclared target, or whose
    dispatcher was never declared, is reported."""
    dr = next(s for s in production_schedules() if s.name == "dr_auto_approval")
    renamed = dataclasses.replace(dr, target="job_dr_auto_approval")
    orphan = dataclasses.replace(dr, name="orphan", dispatcher="periodic_orphan")
    assert wiring_faults(broker, [renamed, orphan]) == [
        "dr_auto_approval: target 'job_dr_auto_approval' is not declared",
        "orphan: dispatcher 'periodic_orphan' is not declared"]


def test_the_scheduler_runs_every_production_schedule(broker):
    from periodic.scheduler import TickScheduler

    scheduler = TickScheduler([a for a in broker.actors.values() if "periodic" in a.options])
    running = {entry[0].name for entry in scheduler.schedules.values()}
    assert {s.name for s in production_schedules()} <= running
