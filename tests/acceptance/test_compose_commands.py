"""Each docker-compose service's ``command`` really starts: run natively (no Docker engine
here) against local Redis and PostgreSQL with the service's own environment, only the
addresses swapped for local ones. postgres and grafana run their images' entrypoints
(no command in the file) and cannot run here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import yaml

from tests.conftest import BASE_PG, BASE_REDIS, admin_execute, create_database, drop_database, flush_namespace, wait_for
from tests.support.metrics_prometheus import free_port, get_json
from tests.support.metrics_tools import COMPOSE, METRICS, ROOT, require_tool

pytestmark = pytest.mark.acceptance

SECRETS = {"POSTGRES_PASSWORD": "unused-locally", "GRAFANA_ADMIN_PASSWORD": "unused-locally",
           "LEDGER_READONLY_PASSWORD": "unused-locally", "REDIS_PASSWORD": "redis-pw-locally"}
BIN = Path(sys.executable).parent


def rendered_services() -> dict[str, Any]:
    exe = require_tool("docker-compose", "docker-compose")
    result = subprocess.run([exe, "-f", str(COMPOSE), "config"], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"], **SECRETS}, timeout=60)  # the file's defaults only
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout)["services"])


def native(command: list[str]) -> list[str]:
    """The container's executables are the virtualenv's here."""
    head = sys.executable if command[0] == "python" else str(BIN / command[0])
    return [head, *command[1:]]


class Service:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log_path = name, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)  # the main process only, as docker stop does
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def test_every_service_command_starts_natively(redis_url: str, tmp_path: Path) -> None:
    services = rendered_services()
    db = f"h6_compose_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    database_url = create_database(db)
    namespace = f"h6compose{uuid.uuid4().hex[:8]}"
    readonly = f"h6ro_{uuid.uuid4().hex[:8]}"  # Grafana's role, of this test's own: roles are cluster-wide
    client = redis_lib.Redis.from_url(BASE_REDIS)
    running: list[Service] = []

    def env_of(name: str, **extra: str) -> dict[str, str]:
        env = {k: str(v) for k, v in (services[name].get("environment") or {}).items()}
        # Same variables as in the container; only the addresses are local.
        env.update(DATABASE_URL=database_url, REDIS_URL=BASE_REDIS, REDIS_NAMESPACE=namespace, **extra)
        return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(ROOT), **env}

    def start(name: str, **extra: str) -> Service:
        svc = Service(name, native(services[name]["command"]), env_of(name, **extra), tmp_path / f"{name}.log")
        running.append(svc)
        return svc

    try:
        # redis: the compose command, on a free port with a private data directory.
        redis_port = free_port()
        redis_cmd = [require_tool("redis-server", "redis-server"), *services["redis"]["command"][1:], "--port",
                     str(redis_port), "--dir", str(tmp_path), "--bind", "127.0.0.1"]
        redis_svc = Service("redis", redis_cmd, {"PATH": os.environ["PATH"]}, tmp_path / "redis.log")
        running.append(redis_svc)
        own = redis_lib.Redis(port=redis_port, password=SECRETS["REDIS_PASSWORD"])  # compose requires it
        wait_for(lambda: _ping(own), 20, what="redis-server")
        assert own.config_get("appendonly")["appendonly"] == "yes"
        assert own.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"

        migrations = start("migrations", LEDGER_READONLY_ROLE=readonly)
        assert migrations.proc.wait(120) == 0, migrations.log
        import psycopg2

        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('job_runs'), to_regclass('schedule_ticks')")
            assert all(cur.fetchone())
        ledger_readonly = start("ledger-readonly", LEDGER_READONLY_ROLE=readonly)
        assert ledger_readonly.proc.wait(60) == 0, ledger_readonly.log
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (readonly,))
            assert cur.fetchone() == (True,)

        worker = start("worker")
        wait_for(lambda: "Worker process is ready" in worker.log or not worker.alive(), 90, what="worker ready")
        assert worker.alive(), worker.log[-3000:]
        scheduler = start("scheduler")
        wait_for(lambda: client.zcard(f"{namespace}:platform:schedulers") or not scheduler.alive(), 60,
                 what="scheduler heartbeat")
        assert scheduler.alive(), scheduler.log[-3000:]

        exporter_port = free_port()
        exporter = start("exporter", EXPORTER_HOST="127.0.0.1", EXPORTER_PORT=str(exporter_port))
        body = wait_for(lambda: _get(f"http://127.0.0.1:{exporter_port}/metrics") or
                        (None if exporter.alive() else pytest.fail(exporter.log[-3000:])), 60, what="exporter")
        assert "jobs_schedulers_alive 1.0" in body
        assert "jobs_workers_alive" in body and "jobs_workers_alive 0.0" not in body
        assert 'jobs_exporter_source_up{source="ledger"} 1.0' in body

        # prometheus: the compose command with the mounted files' local paths.
        prom_port = free_port()
        config = yaml.safe_load((METRICS / "prometheus.yml").read_text())
        config["rule_files"] = [str(METRICS / "alerts.yml")]
        config["global"]["scrape_interval"] = "1s"
        config["scrape_configs"][0]["scrape_timeout"] = "900ms"
        config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{exporter_port}"]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom_cmd = [require_tool("prometheus", "prometheus")]
        for arg in services["prometheus"]["command"]:
            key = arg.split("=", 1)[0]
            prom_cmd.append({"--config.file": f"--config.file={tmp_path / 'prometheus.yml'}",
                             "--storage.tsdb.path": f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             "--web.listen-address": f"--web.listen-address=127.0.0.1:{prom_port}"}.get(key, arg))
        prometheus = Service("prometheus", prom_cmd, {"PATH": os.environ["PATH"]}, tmp_path / "prometheus.log")
        running.append(prometheus)
        base = f"http://127.0.0.1:{prom_port}"
        wait_for(lambda: _get(f"{base}/-/ready"), 60, what="prometheus ready")
        rules = [r for g in get_json(f"{base}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        expected = sum(len(g["rules"]) for g in yaml.safe_load((ROOT / "metrics" / "alerts.yml").read_text())["groups"])
        assert len(rules) == expected >= 15  # every rule in the repo's file, loaded by the compose command
        wait_for(lambda: [t for t in get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
                          if t["labels"]["job"] == "jobs-exporter" and t["health"] == "up"], 30,
                 what="prometheus scraping the exporter")

        # SIGTERM to the worker's main process: a clean, prompt exit.
        started = time.monotonic()
        assert worker.stop() == 0, worker.log[-3000:]
        assert time.monotonic() - started < 30
    finally:
        for svc in reversed(running):
            svc.stop()
        flush_namespace(client, namespace)
        from jobcore.db import reset_control_engine

        reset_control_engine()
        drop_database(db)
        admin_execute(f'DROP ROLE IF EXISTS "{readonly}"')
    assert BASE_PG


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        return False


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode() if resp.status == 200 else None
    except OSError:
        return None
