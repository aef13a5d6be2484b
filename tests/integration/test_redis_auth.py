"""Every process against a password-protected (and a TLS) Redis of the test's own.

With the password in ``REDIS_URL`` the worker, the scheduler, the exporter and ``jobctl``
work; without it (or with a wrong one) each fails at start with one clear line, the
password masked, instead of a traceback or a process that runs on and fails every call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis

from jobcore.settings import Settings
from tests.conftest import ROOT, TEST_ENV, wait_for
from tests.support.chaos import free_port
from tests.support.ledger import count
from tests.support.redis_ha import RedisNode, have, run_module

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-redis-pw"
WRONG = "not-the-right-pw"


@pytest.fixture()
def auth_redis(tmp_path: Path):
    if not have("redis-server"):
        pytest.skip("redis-server not installed")
    node = RedisNode(tmp_path, password=PASSWORD)
    # An ACL user besides the default user's password.
    node.client().execute_command("ACL", "SETUSER", "jobs", "on", ">jobs-pw", "~*", "&*", "+@all")
    yield node
    node.stop()


def _url(node: RedisNode, auth: str) -> str:
    return f"redis://{auth}127.0.0.1:{node.port}/0"


def _settings(url: str, **extra: object) -> Settings:
    return Settings(redis_url=url, dev_env=True, **extra)  # type: ignore[arg-type]


def _one_clear_line(output: str, secret: str) -> str:
    assert secret not in output, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    assert "Redis" in lines[0] and "127.0.0.1" in lines[0], lines[0]
    return lines[0]


def test_make_client_with_password_acl_user_and_without(auth_redis):
    from jobcore.redis_client import make_client

    assert make_client(_settings(_url(auth_redis, f":{PASSWORD}@"))).ping()
    assert make_client(_settings(_url(auth_redis, "jobs:jobs-pw@"))).ping()
    with pytest.raises(redis.AuthenticationError):
        make_client(_settings(_url(auth_redis, ""))).ping()
    with pytest.raises(redis.AuthenticationError):
        make_client(_settings(_url(auth_redis, f"jobs:{WRONG}@"))).ping()


def test_every_process_works_with_the_password(auth_redis, start_worker, start_scheduler, tmp_path):
    from tests.support.failover_actors import reset_tables

    reset_tables()
    env = {"REDIS_URL": _url(auth_redis, f":{PASSWORD}@")}
    start_worker("tests.support.failover_actors", env=env)
    out = tmp_path / "sent.jsonl"
    produced = run_module("tests.support.producer", str(out), "3", env=env)
    assert produced.returncode == 0, produced.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:ids) AND resolution = 'COMPLETED'",
                           ids=ids) == 3, 30, what="the 3 jobs to complete through the password-protected Redis")
    assert count("SELECT count(*) FROM test_job_executions") == 3

    start_scheduler(only="test_every_2s", env=env)
    raw = auth_redis.client()
    wait_for(lambda: raw.zcard(f"{TEST_ENV['REDIS_NAMESPACE']}:platform:schedulers") > 0, 20,
             what="the scheduler's heartbeat in the private Redis")

    port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "metrics", "--port", str(port)], cwd=ROOT,
                                env={**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), **env, "EXPORTER_DOMAIN": "0"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def scrape() -> str | None:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            except OSError:
                return None
        text = wait_for(scrape, 30, what="the exporter")
        assert 'jobs_exporter_source_up{source="redis"} 1.0' in text
    finally:
        exporter.kill()
        exporter.wait(10)

    cli = run_module("cli", "queues", "--json", env=env)
    assert cli.returncode == 0, cli.stderr
    assert any(q["queue"] == "default" for q in json.loads(cli.stdout))


@pytest.mark.parametrize("auth", ["", f":{WRONG}@"], ids=["no-password", "wrong-password"])
def test_every_process_fails_with_one_clear_line_without_the_password(auth_redis, auth, start_worker, tmp_path):
    env = {"REDIS_URL": _url(auth_redis, auth)}
    secret = WRONG if auth else PASSWORD

    worker = start_worker("tests.support.failover_actors", env=env, wait=False)
    worker.proc.wait(60)
    assert worker.proc.returncode == 3, worker.log
    line = _one_clear_line(worker.log, secret)
    assert not auth or ":***@" in line, line

    scheduler = run_module("periodic", "run", env={**env, "SCHEDULES_ENABLED": "1", "SCHEDULES_ONLY": "test_every_2s"})
    assert scheduler.returncode == 3, scheduler.stdout + scheduler.stderr
    _one_clear_line(scheduler.stdout + scheduler.stderr, secret)

    exporter = run_module("metrics", "--port", str(free_port()), env={**env, "EXPORTER_DOMAIN": "0"})
    assert exporter.returncode == 3, exporter.stdout + exporter.stderr
    _one_clear_line(exporter.stdout + exporter.stderr, secret)

    cli = run_module("cli", "queues", env=env)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    _one_clear_line(cli.stdout + cli.stderr, secret)


def test_tls_is_verified_against_the_configured_ca(tmp_path):
    """rediss:// with REDIS_CA_FILE works; without the CA the certificate is refused
    (verification is on by default), and so is a CA that did not sign it."""
    from jobcore.redis_client import make_client
    from tests.support.tls_servers import make_certs

    if not have("redis-server"):
        pytest.skip("redis-server not installed")
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")
    try:
        node = RedisNode(tmp_path, password=PASSWORD, certs=certs)
    except RuntimeError as exc:  # a redis-server built without TLS
        pytest.skip(f"redis-server without TLS support: {exc}")
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{node.port}/0"
        assert make_client(_settings(url, redis_ca_file=certs.ca_file)).ping()
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            make_client(_settings(url)).ping()
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            make_client(_settings(url, redis_ca_file=other.ca_file)).ping()
        # A whole process over TLS: jobctl reads the queues.
        env = {"REDIS_URL": url, "REDIS_CA_FILE": certs.ca_file}
        cli = run_module("cli", "queues", env=env)
        assert cli.returncode == 0, cli.stderr
        refused = run_module("cli", "queues", env={"REDIS_URL": url})
        assert refused.returncode == 1
        line = _one_clear_line(refused.stdout + refused.stderr, PASSWORD)
        assert "certificate verify failed" in line, line
    finally:
        node.stop()


def test_redis_url_options_that_would_weaken_tls_are_refused():
    from jobcore.errors import ConfigurationError
    from jobcore.redis_client import make_client

    with pytest.raises(ConfigurationError, match="query options are not supported"):
        make_client(_settings("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none"))
    with pytest.raises(ConfigurationError, match="REDIS_SENTINEL_SERVICE"):
        Settings.from_env({"REDIS_SENTINELS": "127.0.0.1:26379", "DEV_ENV": "1"})
