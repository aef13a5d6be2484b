"""docker-compose.yml: valid (``docker-compose config -q``; Debian's docker-compose validates
without an engine), secrets only from the environment, Redis durable, the worker stopped with
SIGTERM to its main process only."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.metrics_tools import COMPOSE, ROOT, require_tool

pytestmark = pytest.mark.unit

SECRETS = {"POSTGRES_PASSWORD": "pw-from-env-1", "GRAFANA_ADMIN_PASSWORD": "pw-from-env-2",
           "LEDGER_READONLY_PASSWORD": "pw-from-env-3", "REDIS_PASSWORD": "pw-from-env-4"}


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = require_tool("docker-compose", "docker-compose")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith(("POSTGRES_", "REDIS_"))}
    return subprocess.run([exe, "-f", str(COMPOSE), *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})


def rendered() -> dict[str, Any]:
    result = compose("config", env=SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_config_is_valid() -> None:
    result = compose("config", "-q", env=SECRETS)
    assert result.returncode == 0, result.stderr


def test_required_secrets_must_come_from_the_environment() -> None:
    assert compose("config", "-q").returncode != 0
    result = compose("config", "-q", env={k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"})
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_no_secret_literals_in_the_file() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    services = raw["services"]
    secret_key = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN")
    for name, service in services.items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if secret_key.search(key):
                assert isinstance(value, str) and value.startswith("${"), f"{name}.{key} is a literal"
    config = rendered()["services"]
    assert "pw-from-env-1" in config["worker"]["environment"]["DATABASE_URL"]
    assert config["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw-from-env-1"
    assert config["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "pw-from-env-2"
    # Grafana reads the ledger as the read-only role, never as the owner (POSTGRES_USER).
    assert config["grafana"]["environment"]["LEDGER_DB_USER"] == "jobs_readonly"
    assert config["grafana"]["environment"]["LEDGER_DB_PASSWORD"] == "pw-from-env-3"
    assert "pw-from-env-1" not in str(config["grafana"])
    assert config["ledger-readonly"]["environment"]["LEDGER_READONLY_PASSWORD"] == "pw-from-env-3"


def test_redis_requires_a_password_that_every_app_service_has() -> None:
    result = compose("config", "-q", env={k: v for k, v in SECRETS.items() if k != "REDIS_PASSWORD"})
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr
    services = rendered()["services"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == "pw-from-env-4"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    for name in ("migrations", "worker", "scheduler", "exporter"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://:pw-from-env-4@redis:6379/0", name


def test_services_and_commands() -> None:
    services = rendered()["services"]
    assert set(services) == {"redis", "postgres", "migrations", "ledger-readonly", "worker", "scheduler", "exporter",
                             "console",
                             "prometheus", "grafana"}
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"
    assert services["migrations"]["command"] == ["alembic", "upgrade", "head"]
    assert services["ledger-readonly"]["command"] == ["python", "-m", "jobcore.readonly_role"]
    assert services["ledger-readonly"]["depends_on"]["migrations"]["condition"] == "service_completed_successfully"
    assert services["grafana"]["depends_on"]["ledger-readonly"]["condition"] == "service_completed_successfully"
    assert services["worker"]["command"][:2] == ["dramatiq", "actors"]
    assert services["scheduler"]["command"] == ["python", "-m", "periodic", "run"]
    assert services["exporter"]["command"] == ["python", "-m", "metrics"]
    assert services["exporter"]["environment"]["EXPORTER_PORT"] == "9300"
    prom_mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert {"/etc/prometheus/alerts.yml", "/etc/prometheus/prometheus.yml"} <= prom_mounts
    graf_mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= graf_mounts


def _seconds(value: str) -> int:
    total = 0
    for amount, unit in re.findall(r"(\d+)([hms])", value):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def test_worker_stop_is_sigterm_to_the_main_process_with_enough_grace() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    services = rendered()["services"]
    for name in ("worker", "scheduler", "exporter"):
        service = services[name]
        assert service["stop_signal"] == "SIGTERM", name
        # No init process: the command itself is PID 1 and alone receives the signal.
        assert service.get("init", False) is False, name
        assert isinstance(service["command"], list), f"{name}: exec form, no shell wrapping the process"
    # The worker waits for running jobs up to their time limit (TIME_LIMIT_MS default 600 s).
    from jobcore.settings import Settings

    assert _seconds(raw["worker"]["stop_grace_period"]) > Settings().time_limit_ms / 1000
