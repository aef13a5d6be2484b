"""A bank-gateway simulator speaking the protocol of :mod:`actors.escrow.bank_gateway`.

Run it with ``python -m actors.escrow.bank_simulator --port N`` (127.0.0.1 only). Transfers
live in memory, de-duplicated by idempotency key. Faults are injected on request, either
per request with the ``X-Fault`` header or queued for the next submits with
``POST /_faults {"faults": ["drop", "delay=2", ...]}``:

* ``delay=S``   -- wait S seconds, then commit and answer normally;
* ``drop``      -- commit the transfer, then close the connection without an answer;
* ``error=503`` -- answer with that 5xx status without committing;
* ``timeout=S`` -- commit nothing, hold the connection S seconds, then close it.

Lookups (``GET /transfers/<key>``) take their own queue, ``{"get_faults": ["delay=2"]}``
(only ``delay`` applies to them).

Test endpoints: ``GET /_stats`` (every submit and lookup received per key, every
transfer), ``POST /_reset``, ``GET /health``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

FIELDS = ("idempotency_key", "kind", "amount", "beneficiary", "account_token", "reference")


class BankState:
    """The simulated bank's books and its queued faults."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.transfers: dict[str, dict[str, Any]] = {}
        self.submits: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()
        self.faults: list[str] = []
        self.get_faults: list[str] = []

    def reset(self) -> None:
        with self.lock:
            self.transfers.clear()
            self.submits.clear()
            self.gets.clear()
            self.faults.clear()
            self.get_faults.clear()

    def next_fault(self) -> str | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None

    def next_get_fault(self) -> str | None:
        with self.lock:
            return self.get_faults.pop(0) if self.get_faults else None

    def commit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Commit ``body`` once per key; (201, transfer) new, (200, transfer) repeat, 409 conflict."""
        key = body["idempotency_key"]
        with self.lock:
            existing = self.transfers.get(key)
            if existing is not None:
                same = all(str(existing[f]) == str(body[f]) for f in FIELDS)
                return (200, existing) if same else (409, existing)
            transfer = {**{f: body[f] for f in FIELDS}, "transfer_id": f"HB-{uuid.uuid4().hex[:12]}",
                        "status": "COMPLETED", "created_at": dt.datetime.now(dt.UTC).isoformat()}
            self.transfers[key] = transfer
            return 201, transfer


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict) or any(f not in body for f in FIELDS):
        return f"body must have {', '.join(FIELDS)}"
    if body["kind"] not in ("ACH", "WIRE"):
        return "kind must be ACH or WIRE"
    try:
        if Decimal(str(body["amount"])) <= 0:
            return "amount must be positive"
    except InvalidOperation:
        return "amount is not a number"
    return None


def make_handler(state: BankState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _json(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                return json.loads(raw or b"{}")
            except ValueError:
                return None

        def _drop(self) -> None:
            """Close the TCP connection without an answer."""
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path == "/health":
                self._json(200, {"ok": True})
            elif self.path == "/_stats":
                with state.lock:
                    self._json(200, {"submits": dict(state.submits), "gets": dict(state.gets),
                                     "transfers": dict(state.transfers)})
            elif self.path.startswith("/transfers/"):
                key = self.path[len("/transfers/"):]
                with state.lock:
                    state.gets[key] += 1
                name, _, arg = (self.headers.get("X-Fault") or state.next_get_fault() or "").partition("=")
                if name == "delay":
                    time.sleep(float(arg or 1))
                with state.lock:
                    transfer = state.transfers.get(key)
                if transfer is None:
                    self._json(404, {"error": "not_found"})
                else:
                    self._json(200, {"transfer": transfer})
            else:
                self._json(404, {"error": "no such resource"})

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self._body()
            if self.path == "/_reset":
                state.reset()
                self._json(200, {"ok": True})
                return
            if self.path == "/_faults":
                with state.lock:
                    state.faults.extend(str(f) for f in (body or {}).get("faults", []))
                    state.get_faults.extend(str(f) for f in (body or {}).get("get_faults", []))
                self._json(200, {"queued": len(state.faults), "get_queued": len(state.get_faults)})
                return
            if self.path != "/transfers":
                self._json(404, {"error": "no such resource"})
                return
            error = _validate(body)
            if error:
                self._json(422, {"error": error})
                return
            with state.lock:
                state.submits[body["idempotency_key"]] += 1
            fault = self.headers.get("X-Fault") or state.next_fault()
            name, _, arg = (fault or "").partition("=")
            if name == "delay":
                time.sleep(float(arg or 1))
            elif name == "error":
                self._json(int(arg or 503), {"error": "injected failure, nothing committed"})
                return
            elif name == "timeout":
                time.sleep(float(arg or 30))
                self._drop()
                return
            status, transfer = state.commit(body)
            if name == "drop":
                log.info("committed %s and dropping the response", body["idempotency_key"])
                self._drop()
                return
            if status == 409:
                self._json(409, {"error": "idempotency key reused with a different body"})
                return
            self._json(status, {"transfer": transfer, "created": status == 201})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server API
            log.debug(format, *args)

    return Handler


def make_server(port: int = 0, state: BankState | None = None) -> tuple[ThreadingHTTPServer, BankState]:
    """A simulator bound to 127.0.0.1:``port`` (0 = any free port), not yet serving."""
    bank = state or BankState()
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(bank))
    server.daemon_threads = True
    return server, bank


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bank-sim %(message)s")
    server, _ = make_server(args.port)
    print(f"bank simulator listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
