"""Fault injection on loopback: a cuttable TCP proxy and private redis-server instances."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; :meth:`cut` drops every connection and
    refuses new ones (the target looks down), :meth:`restore` brings it back.

    :meth:`freeze` makes every connection *half-open*: bytes are accepted (TCP ACKs them)
    but never forwarded, and nothing is closed, as when a NAT or a firewall drops a
    connection's state. :meth:`heal` lets new connections through again; the frozen ones
    stay frozen for good."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._running = True
        self._frozen_new = threading.Event()
        self._freezes: list[threading.Event] = []
        self.accepted = 0  # connections accepted so far (a test can assert none were made)
        self.restore()

    def freeze(self) -> None:
        self._frozen_new.set()
        with self._lock:
            for flag in self._freezes:
                flag.set()

    def heal(self) -> None:
        self._frozen_new.clear()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                # Accepted by a blocked accept() just as the proxy was cut: refuse it.
                client.close()
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            # The connect timeout must not stay on the socket: a frozen (half-open)
            # connection would otherwise be closed by the proxy after 5 s of silence.
            upstream.settimeout(None)
            frozen = threading.Event()
            if self._frozen_new.is_set():
                frozen.set()
            with self._lock:
                self._conns += [client, upstream]
                self._freezes.append(frozen)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b, frozen), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, frozen: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                while frozen.is_set():  # half-open: swallow, never answer, never close
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone does not wake a thread blocked in accept(): it would still take
            # one more connection. shutdown() does (EINVAL), so the cut is complete.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def restore(self) -> None:
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()


class PrivateRedis:
    """A redis-server of the test's own, so it can be SIGKILLed and restarted."""

    def __init__(self, directory: Path, *, appendonly: bool, fsync: str = "always") -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not installed")
        self.dir = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", self.fsync] if self.appendonly else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()
