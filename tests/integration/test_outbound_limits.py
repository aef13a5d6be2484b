"""Outbound calls are bounded (issue 13, item 10): an overall deadline per HTTP call against a
real loopback server that trickles, explicit boto3 time-outs, https outside DEV_ENV."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobcore.errors import ConfigurationError, OutcomeUnknown
from jobcore.settings import Settings

pytestmark = pytest.mark.integration

BYTES = 40          # the trickled body (or header) length
INTERVAL = 0.25     # seconds between two bytes: far below any per-read timeout
TRICKLE = BYTES * INTERVAL  # how long the whole answer takes


@contextmanager
def trickling_server(what: str, size: int = BYTES) -> Iterator[str]:
    """A loopback HTTP server that answers one byte every INTERVAL seconds, in the body
    (``what="body"``) or already in the headers (``what="headers"``)."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def _trickle(self, data: bytes) -> None:
            for i in range(len(data)):
                if stop.is_set():
                    return
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(INTERVAL)

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            try:
                if what == "headers":
                    self._trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * size + b"\r\nContent-Length: 2\r\n\r\n{}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(size + 2))
                self.end_headers()
                self._trickle(b'"' + b"x" * size + b'"')
            except OSError:  # the client hung up: what the deadline is for
                pass

        do_GET = do_POST = _answer  # noqa: N815 - http.server API

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("what", ["body", "headers"])
def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(what: str) -> None:
    from jobcore.http import DeadlineExceeded, DeadlineSession

    deadline = TRICKLE / 8
    with trickling_server(what) as url, DeadlineSession(deadline) as http:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            http.get(url, timeout=TRICKLE)  # no single read ever waits that long
        elapsed = time.monotonic() - start
    assert elapsed < TRICKLE / 3, f"{elapsed:.2f}s for a {deadline:.2f}s deadline"


def test_a_call_within_its_deadline_is_unaffected() -> None:
    from jobcore.http import DeadlineSession

    with trickling_server("body", size=BYTES // 8) as url, DeadlineSession(TRICKLE) as http:
        resp = http.get(url, timeout=TRICKLE)
    assert resp.status_code == 200 and resp.json() == "x" * (BYTES // 8)


def test_the_bank_client_reports_a_trickled_transfer_as_outcome_unknown() -> None:
    from decimal import Decimal

    from actors.escrow.bank_gateway import BankGatewayClient, TransferRequest

    with trickling_server("body") as url:
        client = BankGatewayClient(url, timeout=TRICKLE, deadline=TRICKLE / 8)
        start = time.monotonic()
        with pytest.raises(OutcomeUnknown):
            client.submit(TransferRequest("k-1", "ACH", Decimal("1.00"), "B", "tok", "ref"))
        assert time.monotonic() - start < TRICKLE / 3


def test_the_status_check_session_has_the_deadline() -> None:
    from actors.escrow.aws_status import make_http_session
    from jobcore.http import DeadlineSession

    http = make_http_session(Settings.from_env({"HTTP_DEADLINE": "7"}))
    assert isinstance(http, DeadlineSession) and http.deadline == 7


def test_s3_clients_have_explicit_timeouts_and_attempts() -> None:
    from actors.escrow.aws_status import make_s3_client

    s3 = make_s3_client(Settings.from_env({"AWS_CONNECT_TIMEOUT": "2", "AWS_READ_TIMEOUT": "4",
                                           "AWS_MAX_ATTEMPTS": "2", "S3_ENDPOINT_URL": "http://127.0.0.1:1"}))
    config = s3.meta.config
    assert (config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]) == (2, 4, 2)
    defaults = make_s3_client(Settings()).meta.config
    assert defaults.connect_timeout < 60 and defaults.read_timeout < 60  # not botocore's


@pytest.mark.parametrize("variable", ["BANK_GATEWAY_URL", "INTERNAL_API_URL"])
def test_plain_http_endpoints_are_refused_outside_dev(variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: "http://bank.internal:8099"})
    assert Settings.from_env({variable: "http://127.0.0.1:8099", "DEV_ENV": "1"})  # a developer's stub
    assert Settings.from_env({variable: "https://bank.internal:8099"})
    assert Settings.from_env({}).bank_gateway_url.startswith("https://")
