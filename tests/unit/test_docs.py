"""The docs cannot drift from the code: the configuration page is generated from the
settings object, every setting the docs name exists, every doc the README maps exists,
and the README stays a short entry point."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from jobcore.settings import Settings
from jobcore.settings_doc import render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
SETTINGS = {f.name.upper() for f in fields(Settings)}
# Environment variables the docs name that are not platform settings.
NOT_SETTINGS = {
    "JOBS_ENV_FILE", "CI", "NO_COLOR", "PATH", "HOME", "TEST_PG_URL", "TEST_REDIS_URL", "VENV", "RUN_DIR",
    "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD",
    "JOBS_IMAGE", "LEDGER_DB_USER", "LEDGER_DB_PASSWORD", "LEDGER_DB_HOST", "LEDGER_DB_NAME", "PROMETHEUS_URL",
    "EXTRA_SCHEDULES_MODULE", "JOBCTL_OPERATOR", "UP_EXIT_AFTER_DEMO", "SMTP_STARTTLS",
    "SOAK_JOBS", "BENCH_PG_URL", "BENCH_REDIS_URL", "BENCH_LOG_DIR", "CONSOLE_SCREENSHOTS", "REDIS_PASSWORD",
    "OPENBLAS_CORETYPE", "PG_URL", "DEBIAN_FRONTEND", "PYTHONPATH", "TZ", "FAILOVER_REPORT",
}
# Actor names are capitals too (EMAIL_MATCHING): they are not settings.
ACTOR_NAMES = {m for path in (ROOT / "actors").rglob("*.py")
               for m in re.findall(r'actor_name="([A-Z][A-Z0-9_]+)"', path.read_text())}
ACTOR_NAMES |= set(re.findall(r'"([A-Z][A-Z0-9_]+)"', (ROOT / "periodic" / "schedules.py").read_text()))
# A backticked name in capitals with an underscore, optionally `=value`: how docs cite a variable.
VARIABLE = re.compile(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:=[^`]*)?`")


def test_the_configuration_page_is_generated_from_the_settings_object():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), "run: .venv/bin/python -m jobcore.settings_doc > docs/configuration.md"


@pytest.mark.parametrize("doc", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_setting_the_docs_name_exists(doc):
    named = set(VARIABLE.findall(doc.read_text()))
    unknown = sorted(named - SETTINGS - NOT_SETTINGS - ACTOR_NAMES)
    assert not unknown, f"{doc.name} names settings that do not exist: {unknown}"


def test_the_readme_is_short_and_its_map_points_at_docs_that_exist():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert {"docs/architecture.md", "docs/ledger.md", "docs/scheduling.md", "docs/tenancy.md", "docs/domains.md",
            "docs/configuration.md", "docs/operations.md", "docs/runbook.md", "docs/performance.md",
            "docs/security.md", "docs/scaling.md", "docs/console.md"} <= linked
    for path in linked:
        assert (ROOT / path).is_file(), path
