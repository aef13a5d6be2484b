"""Shared fixtures: real Redis and PostgreSQL, a migrated control database, worker subprocesses.

Like dramatiq's own conftest, a test that needs a service skips when the service is
absent locally, and fails when ``CI=true`` (a CI run that silently skipped its
integration tests would prove nothing).

The whole session uses one Redis namespace and one freshly migrated control database;
both are set in the environment *before* any test imports the platform (``jobplatform``),
and every integration test starts from an empty namespace and empty ledger tables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Fixture modules of each area, registered here so test modules need not import them.
pytest_plugins = ["tests.support.tenancy_fixtures", "tests.support.casemgmt_fixtures", "tests.support.imap_server"]

ROOT = Path(__file__).resolve().parent.parent
BASE_PG = os.environ.get("TEST_PG_URL", "postgresql://root@127.0.0.1:5432")
BASE_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

SESSION_TAG = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
CONTROL_DB = f"jpt_{SESSION_TAG}"
NAMESPACE = f"jpt{SESSION_TAG}"

# Fast failure detection for tests; production values are documented in the README.
TEST_ENV = {
    "DATABASE_URL": f"{BASE_PG}/{CONTROL_DB}",
    "REDIS_URL": BASE_REDIS,
    "REDIS_NAMESPACE": NAMESPACE,
    "HEARTBEAT_TIMEOUT_MS": "3000",
    "HEARTBEAT_INTERVAL_MS": "500",
    "SWEEP_INTERVAL_MS": "500",
    "REVOKE_POLL_MS": "200",
    "LEDGER_LEASE_MS": "1000",
    "POSTHOG_API_KEY": "",
    "DEV_ENV": "1",
    # A developer's .env (written by .ci/up) must not leak into the tests.
    "JOBS_ENV_FILE": "",
    # Test schedules (seconds-scale cadences) are declared next to the production ones.
    "EXTRA_SCHEDULES_MODULE": "tests.support.periodic_schedules",
}
os.environ.update(TEST_ENV)


def _unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not reachable", pytrace=False)
    pytest.skip(f"{what} not reachable")


def _redis_ok() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(BASE_REDIS, socket_connect_timeout=1).ping())
    except Exception:
        return False


def _pg_ok() -> bool:
    import psycopg2

    try:
        psycopg2.connect(f"{BASE_PG}/postgres", connect_timeout=2).close()
        return True
    except Exception:
        return False


def admin_execute(sql: str, db: str = "postgres") -> None:
    """Run one statement with autocommit (CREATE/DROP DATABASE)."""
    import psycopg2

    conn = psycopg2.connect(f"{BASE_PG}/{db}")
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def create_database(name: str) -> str:
    """Create an empty database (dropping a leftover of the same name); return its URL."""
    admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(f'CREATE DATABASE "{name}"')
    return f"{BASE_PG}/{name}"


def drop_database(name: str) -> None:
    admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_ok():
        _unavailable(f"Redis at {BASE_REDIS}")
    return BASE_REDIS


@pytest.fixture(scope="session")
def control_db() -> Iterator[str]:
    """A fresh control database migrated with ``alembic upgrade head`` (as a user would)."""
    if not _pg_ok():
        _unavailable(f"PostgreSQL at {BASE_PG}")
    url = create_database(CONTROL_DB)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": url}, capture_output=True)
    yield url
    from jobcore.db import reset_control_engine

    reset_control_engine()
    drop_database(CONTROL_DB)


def flush_namespace(client: Any, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture()
def redis_client(redis_url: str) -> Any:
    import redis

    return redis.Redis.from_url(redis_url)


@pytest.fixture()
def clean_state(control_db: str, redis_client: Any) -> Iterator[None]:
    """An empty ledger and an empty Redis namespace before (and after) the test."""
    from jobcore.db import control_engine
    from jobcore.settings import get_settings

    get_settings.cache_clear()

    def wipe() -> None:
        flush_namespace(redis_client, NAMESPACE)
        with control_engine().begin() as conn:
            conn.exec_driver_sql("TRUNCATE job_runs, job_errors, rejected_messages, schedule_ticks, "
                                 "schedule_tick_runs, tenants, ledger_cursor, ledger_dead_events, "
                                 "operator_actions RESTART IDENTITY CASCADE")
        from tenancy import registry

        registry._cache.clear()

    wipe()
    yield
    wipe()


@pytest.fixture()
def broker(clean_state: None) -> Any:
    """The application broker (``import jobplatform``), pointed at the test namespace."""
    import jobplatform

    return jobplatform.broker


@dataclass
class WorkerProcess:
    """A ``dramatiq actors`` process group started for a test."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up code runs (a crashed host)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM to the main process only (what docker/systemd should do)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition"
             ) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture()
def start_worker(clean_state: None, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start ``dramatiq actors`` as a subprocess and wait until it consumes."""
    started: list[WorkerProcess] = []

    def start(*modules: str, processes: int = 1, threads: int = 4, env: dict[str, str] | None = None,
              wait: bool = True, queues: list[str] | None = None) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        full_env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), **(env or {})}
        cmd = [sys.executable, "-m", "dramatiq", "actors", *modules, "-p", str(processes), "-t", str(threads)]
        if queues:
            cmd += ["-Q", *queues]
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        worker = WorkerProcess(proc, log_path, full_env)
        started.append(worker)
        if wait:
            wait_for(lambda: "Worker process is ready" in worker.log or not worker.alive(), 60,
                     what="worker start")
            if not worker.alive():
                raise AssertionError(f"worker exited at start:\n{worker.log}")
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture()
def start_scheduler(clean_state: None, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start ``python -m periodic run`` (the scheduler) as a subprocess."""
    started: list[WorkerProcess] = []

    def start(*, only: str, env: dict[str, str] | None = None) -> WorkerProcess:
        log_path = tmp_path / f"scheduler-{len(started)}.log"
        full_env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), "SCHEDULES_ENABLED": "1",
                    "SCHEDULES_ONLY": only, **(env or {})}
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "periodic", "run"], cwd=ROOT, env=full_env,
                                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        scheduler = WorkerProcess(proc, log_path, full_env)
        started.append(scheduler)
        wait_for(lambda: "Scheduler " in scheduler.log or not scheduler.alive(), 60, what="scheduler start")
        if not scheduler.alive():
            raise AssertionError(f"scheduler exited at start:\n{scheduler.log}")
        return scheduler

    yield start
    for scheduler in started:
        scheduler.kill()
