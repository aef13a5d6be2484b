"""Real servers on 127.0.0.1 for the escrow tests: a migrated tenant database, an aiosmtpd
SMTP server, the bank simulator (as a subprocess), a moto S3 server, and a small HTTP
server standing in for CloudFront and the dashboard API."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.conftest import ROOT, _pg_ok, _unavailable, create_database, drop_database, wait_for
from tests.support.chaos import free_port

TENANT_TABLES = ("huntington_operator_actions", "huntington_item_events", "huntington_batch_items",
                 "huntington_batches", "status_checks",
                 "viewing_payment", "viewing_dr", "report_requests", "balance_alerts", "close_reminders",
                 "notifications", "disbursement_requests", "case_parties", "cases", "users")


# -- tenant database ------------------------------------------------------------------------
@dataclass
class TenantDb:
    name: str
    url: str
    engine: Engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)

    def truncate(self) -> None:
        self.execute(f"TRUNCATE {', '.join(TENANT_TABLES)} RESTART IDENTITY CASCADE")


@pytest.fixture(scope="session")
def escrow_tenant_db() -> Iterator[TenantDb]:
    """One tenant database per test session (prefix ``h4_``), migrated with
    ``alembic -c tenancy/alembic.ini upgrade escrow@head`` exactly as an operator would."""
    if not _pg_ok():
        _unavailable("PostgreSQL")
    from jobcore.db import make_engine

    name = f"h4_tenant_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    try:
        subprocess.run([sys.executable, "-m", "alembic", "-c", "tenancy/alembic.ini", "-x", f"url={url}", "upgrade",
                        "escrow@head"], cwd=ROOT, check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        drop_database(name)
        raise AssertionError(f"tenant migration failed:\n{exc.stderr.decode(errors='replace')}") from None
    engine = make_engine(url, pool_size=12)
    yield TenantDb(name, url, engine)
    engine.dispose()
    drop_database(name)


@pytest.fixture()
def tenant(escrow_tenant_db: TenantDb) -> Iterator[TenantDb]:
    """The tenant database, emptied before the test."""
    escrow_tenant_db.truncate()
    yield escrow_tenant_db


# -- SMTP -------------------------------------------------------------------------------------
@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[ReceivedMail]:
        with self.lock:
            return list(self.messages)


@pytest.fixture()
def smtp_server() -> Iterator[SmtpSink]:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it accepts."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
            msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
            with sink.lock:
                sink.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname=sink.host, port=sink.port)
    controller.start()
    yield sink
    controller.stop()


class RestartableSmtp(SmtpSink):
    """An aiosmtpd server on a fixed loopback port that can be stopped (connections are
    refused: an SMTP outage) and started again on the same port."""

    controller: Any = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
                msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
                with sink.lock:
                    sink.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
                return "250 Message accepted for delivery"

        self.controller = Controller(Handler(), hostname=self.host, port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture()
def restartable_smtp() -> Iterator[RestartableSmtp]:
    """A running :class:`RestartableSmtp` (stopped at the end)."""
    sink = RestartableSmtp("127.0.0.1", free_port())
    sink.start()
    yield sink
    sink.stop()


def smtp_sender(sink: SmtpSink) -> Any:
    from actors.escrow.mail import SmtpSender

    return SmtpSender(host=sink.host, port=sink.port, sender="jobs@seedtrust.test", timeout=5,
                      tls="none")  # the test server speaks plain SMTP; no credentials are sent


# -- bank simulator ---------------------------------------------------------------------------
@dataclass
class BankSim:
    url: str
    proc: subprocess.Popen[bytes]

    def stats(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/_stats", timeout=5).json())

    def faults(self, *faults: str) -> None:
        requests.post(f"{self.url}/_faults", json={"faults": list(faults)}, timeout=5).raise_for_status()

    def get_faults(self, *faults: str) -> None:
        """Faults for the next lookups (GET /transfers/<key>): only ``delay=S``."""
        requests.post(f"{self.url}/_faults", json={"get_faults": list(faults)}, timeout=5).raise_for_status()

    def reset(self) -> None:
        requests.post(f"{self.url}/_reset", timeout=5).raise_for_status()


@pytest.fixture()
def bank(tmp_path: Path) -> Iterator[BankSim]:
    """``python -m actors.escrow.bank_simulator --port N`` as a real process on loopback."""
    port = free_port()
    log = open(tmp_path / "bank.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "actors.escrow.bank_simulator", "--port", str(port)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/health", timeout=1).ok
        except requests.RequestException:
            return False

    wait_for(up, 20, what="bank simulator")
    yield BankSim(url, proc)
    proc.kill()
    proc.wait(10)
    log.close()


# -- S3 (moto server) and plain HTTP ------------------------------------------------------
@pytest.fixture()
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server in server mode on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class HttpStub:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    get_status: int = 200
    post_status: int = 200


@pytest.fixture()
def http_stub() -> Iterator[HttpStub]:
    """Answers GET (CloudFront stand-in) and records POSTs with their headers (dashboard API)."""
    stub = HttpStub("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            body = b"<html>seedtrust assets</html>"
            stub.requests.append({"method": "GET", "path": self.path})
            self.send_response(stub.get_status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            stub.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                  "json": json.loads(raw or b"null")})
            self.send_response(stub.post_status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield stub
    server.shutdown()
    server.server_close()


def run_concurrently(n: int, fn: Any) -> list[Any]:
    """Run ``fn(i)`` in ``n`` threads released together; return results (re-raise errors)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def target(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return results


def wait_until(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    return predicate()
