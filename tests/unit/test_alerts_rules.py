"""The alert rules: promtool validates and unit-tests them; every alert has a firing and a
quiet test, full annotations and a runbook section; every schedule's dead-man's switch alerts
carry the seed severity (CRITICAL/HIGH page, MEDIUM/LOW warn)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support.metrics_tools import ALERTS, ALERTS_TEST, METRICS, RUNBOOK, promtool

pytestmark = pytest.mark.unit


def _alerts() -> list[dict]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules_passes() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=METRICS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests are not vacuous: loosening one threshold makes them fail."""
    broken = ALERTS.read_text().replace("jobs_workers_alive == 0", "jobs_workers_alive < 0")
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: WorkersDown" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_test() -> None:
    cases = [c for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for c in t["alert_rule_test"]]
    for alert in _alerts():
        name = alert["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name}: no test shows it firing"
        assert any(not c.get("exp_alerts") for c in mine), f"{name}: no test shows it quiet when healthy"


def test_every_alert_has_summary_description_and_runbook_section() -> None:
    runbook = RUNBOOK.read_text()
    headings = {h.strip().lower() for h in re.findall(r"^## (\w+)\s*$", runbook, flags=re.M)}
    for alert in _alerts():
        name, notes = alert["alert"], alert.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), name
        assert notes.get("runbook_url") == f"docs/runbook.md#{name.lower()}", name
        assert name.lower() in headings, f"{name}: no '## {name}' section in README.md"
        labels = alert.get("labels", {})
        # Schedule alerts take severity/urgency from jobs_schedule_info; all others set them.
        if "jobs_schedule_info" not in alert["expr"]:
            assert labels.get("severity") in {"CRITICAL", "HIGH", "MEDIUM", "LOW"}, name
            assert labels.get("urgency") == ("page" if labels["severity"] in {"CRITICAL", "HIGH"} else "warn"), name


def test_seed_severities_of_the_schedules() -> None:
    """Both seed tables drive severity; the stricter wins (What Breaks if Jobs Are Down)."""
    from metrics.catalog import known_schedules, urgency

    sev = {s.name: s.severity for s in known_schedules()}
    assert sev["dr_auto_approval"] == "CRITICAL"      # "DR auto-approvals stop": CRITICAL
    assert sev["report_generation"] == "CRITICAL"     # "report queue backs up": CRITICAL
    assert sev["case_close_reminders"] == "HIGH"      # "case close reminders missed": HIGH
    assert sev["huntington_auto_heal"] == "HIGH"
    assert sev["account_balance_check"] == "MEDIUM"
    assert sev["account_balance_reminders"] == "MEDIUM"
    assert sev["aws_status_check"] == "MEDIUM"
    assert sev["user_offsite_tracking"] == "LOW"
    assert urgency("CRITICAL") == urgency("HIGH") == "page"
    assert urgency("MEDIUM") == urgency("LOW") == "warn"


KINDS = {
    # alert -> (series making it fire for schedule s, description template)
    "ScheduleMissed": (
        [("jobs_schedule_last_missed_timestamp_seconds", "1000x3"), ("jobs_schedule_last_success_timestamp_seconds",
                                                                     "500x3")],
        "Schedule {s} ({sev}) has a tick recorded MISSED (no scheduler ran within its grace window) and no tick "
        "has succeeded since."),
    "ScheduleFailed": (
        [("jobs_schedule_last_failure_timestamp_seconds", "1000x3"), ("jobs_schedule_last_success_timestamp_seconds",
                                                                      "500x3")],
        "The newest finished tick of schedule {s} ({sev}) failed: the dispatcher could not be sent, or its "
        "dispatcher or a tenant run ended ERROR, EXPIRED or REVOKED; no tick has succeeded since."),
    "ScheduleOverrun": (
        [("jobs_schedule_running_seconds", "700x3"), ("jobs_schedule_max_runtime_seconds", "600x3")],
        "A tick of schedule {s} ({sev}) has had unfinished runs for 11m 40s, longer than its maximum runtime."),
    "ScheduleLate": (
        [("jobs_schedule_next_expected_timestamp_seconds", "0x3"), ("jobs_schedule_grace_seconds", "30x3")],
        "Schedule {s} ({sev}) should have fired 1m 0s ago, beyond its grace period, and no tick was recorded."),
}
SUMMARIES = {"ScheduleMissed": "Schedule {s} missed a tick", "ScheduleFailed": "Schedule {s} failed",
             "ScheduleOverrun": "Schedule {s} runs past its maximum runtime", "ScheduleLate": "Schedule {s} is late"}


def test_every_schedule_pages_or_warns_by_severity(tmp_path: Path) -> None:
    """A generated promtool test: for EVERY schedule, each dead-man's-switch alert (missed,
    late, failed, past max runtime) fires with that schedule's severity and urgency."""
    from metrics.catalog import known_schedules, urgency

    schedules = known_schedules()
    assert len(schedules) >= 13
    tests = []
    for kind, (series, description) in KINDS.items():
        inputs = [{"series": 'jobs_schedules_active', "values": "1x3"}]
        expected = []
        for s in schedules:
            inputs += [{"series": f'{name}{{schedule="{s.name}"}}', "values": values} for name, values in series]
            inputs.append({"series": f'jobs_schedule_info{{schedule="{s.name}",severity="{s.severity}",'
                                     f'urgency="{urgency(s.severity)}"}}', "values": "1x3"})
            expected.append({"exp_labels": {"schedule": s.name, "severity": s.severity,
                                            "urgency": urgency(s.severity)},
                             "exp_annotations": {"summary": SUMMARIES[kind].format(s=s.name),
                                                 "description": description.format(s=s.name, sev=s.severity),
                                                 "runbook_url": f"docs/runbook.md#{kind.lower()}"}})
        tests.append({"interval": "1m", "input_series": inputs,
                      "alert_rule_test": [{"eval_time": "1m", "alertname": kind, "exp_alerts": expected}]})
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m",
                                                    "tests": tests}))
    result = promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
