"""A private PgBouncer (Debian's ``pgbouncer``) on a free port in front of the test
PostgreSQL, in transaction pooling mode, for every database (``* =`` fallback entry)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from tests.support.chaos import free_port

BINARY_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def binary() -> str | None:
    found = shutil.which("pgbouncer")
    return found or next((p for p in BINARY_PATHS if os.path.exists(p)), None)


@dataclass
class PgBouncer:
    """``pgbouncer`` in transaction mode forwarding to ``server`` (host, port) as ``user``.

    Statement timeouts: PgBouncer refuses startup options, so ``query_timeout`` (seconds)
    cancels any query running longer, as a backstop to the databases' own settings."""

    server: tuple[str, int]
    user: str = "root"
    pool_size: int = 20
    query_timeout_s: int = 330
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    dir: Path | None = None

    @property
    def base_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}"

    def start(self) -> PgBouncer:
        exe = binary()
        if exe is None:
            raise RuntimeError("pgbouncer not installed (.ci/lib.sh ensure_sentinel_tools)")
        # pgbouncer will not run as root: it drops to "postgres" (-u), which must read the
        # files, so they live in a world-readable directory of their own.
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.dir.chmod(0o777)
        host, port = self.server
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text("\n".join([
            "[databases]", f"* = host={host} port={port}", "",
            "[pgbouncer]", "listen_addr = 127.0.0.1", f"listen_port = {self.port}", "unix_socket_dir =",
            "auth_type = trust", f"auth_file = {self.dir / 'users.txt'}", f"admin_users = {self.user}",
            "pool_mode = transaction", f"default_pool_size = {self.pool_size}", "max_client_conn = 1000",
            f"query_timeout = {self.query_timeout_s}", "server_idle_timeout = 30",
            f"logfile = {self.dir / 'pgbouncer.log'}", f"pidfile = {self.dir / 'pgbouncer.pid'}", ""]))
        for f in self.dir.iterdir():
            f.chmod(0o666)
        args = [exe, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            args[1:1] = ["-u", "postgres"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                psycopg2.connect(f"{self.base_url}/postgres", connect_timeout=2).close()
                return self
            except psycopg2.OperationalError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not start: {self.log()}")

    def log(self) -> str:
        path = (self.dir or Path("/nonexistent")) / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console (STATS, POOLS, CLIENTS, ...)."""
        conn = psycopg2.connect(f"{self.base_url}/pgbouncer", connect_timeout=5)
        conn.autocommit = True
        try:
            cur = conn.cursor()
            cur.execute(f"SHOW {what}")
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
