"""A real HTTP server on 127.0.0.1 that records what clients POST (PostHog stand-in)."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        self.lock = threading.Lock()

    def events(self) -> list[dict[str, Any]]:
        """Every event in every recorded batch body."""
        out: list[dict[str, Any]] = []
        with self.lock:
            for req in self.requests:
                body = req["json"]
                if isinstance(body, dict) and "batch" in body:
                    out.extend(body["batch"])
                elif isinstance(body, dict):
                    out.append(body)
        return out


@contextmanager
def recording_server(delay: float = 0.0) -> Iterator[tuple[str, Recorder]]:
    """Start the server; ``delay`` seconds before each response simulates a slow service."""
    recorder = Recorder()
    recorder.delay = delay

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            with recorder.lock:
                recorder.requests.append({"path": self.path, "json": body, "raw": raw.decode("utf-8", "replace")})
            time.sleep(recorder.delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": 1}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()
