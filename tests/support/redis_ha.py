"""Private Redis deployments on loopback: a password- or TLS-protected redis-server, and a
Sentinel group (one primary, replicas, three sentinels), each on free ports, so a test can
SIGKILL the primary and watch the failover."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support.chaos import TcpProxy, free_port
from tests.support.tls_servers import Certs

SERVICE = "jobs-primary"


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


class RedisNode:
    """One redis-server of the test's own (optionally with a password, TLS, or as a
    replica of another node)."""

    def __init__(self, directory: Path, *, password: str | None = None, certs: Certs | None = None,
                 replica_of: int | None = None, appendonly: bool = False, name: str = "redis") -> None:
        if not have("redis-server"):
            raise RuntimeError("redis-server not installed")
        self.dir = directory / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.password = password
        self.certs = certs
        self.replica_of = replica_of
        self.appendonly = appendonly
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.certs else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A raw client (the test's own, not the platform's)."""
        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": self.certs.ca_file} if self.certs else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5,
                           socket_connect_timeout=2, **tls, **kwargs)

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log"), "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec"]
        if self.certs:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.certs.cert_file,
                     "--tls-key-file", self.certs.key_file, "--tls-ca-cert-file", self.certs.ca_file,
                     "--tls-auth-clients", "no", "--tls-replication", "yes"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis {self.name} did not start:\n{self.log()}")

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()


@dataclass
class SentinelGroup:
    """A primary, its replicas and three sentinels (quorum 2) on loopback."""

    directory: Path
    password: str
    down_after_ms: int = 1000
    replicas: int = 1
    # Replicas replicate through a TcpProxy (``proxy``), so a test can freeze replication.
    replica_proxy: bool = False
    proxy: TcpProxy | None = None
    nodes: list[RedisNode] = field(default_factory=list)
    sentinels: list[tuple[int, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self) -> SentinelGroup:
        if not have("redis-sentinel"):
            raise RuntimeError("redis-sentinel not installed (.ci/lib.sh ensure_sentinel_tools)")
        primary = RedisNode(self.directory, password=self.password, name="node0", appendonly=True)
        upstream = primary.port
        if self.replica_proxy:
            self.proxy = TcpProxy("127.0.0.1", primary.port)
            upstream = self.proxy.port
        self.nodes = [primary] + [RedisNode(self.directory, password=self.password, replica_of=upstream,
                                            name=f"node{i + 1}", appendonly=True) for i in range(self.replicas)]
        for i in range(3):
            port = free_port()
            sdir = self.directory / f"sentinel{i}"
            sdir.mkdir(parents=True, exist_ok=True)
            conf = sdir / "sentinel.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {sdir}", f"logfile {sdir / 'sentinel.log'}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2",
                f"sentinel auth-pass {SERVICE} {self.password}",
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                f"sentinel failover-timeout {SERVICE} 10000",
                f"sentinel parallel-syncs {SERVICE} 1", ""]))
            proc = subprocess.Popen(["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            self.sentinels.append((port, proc))
        self.wait_ready()
        return self

    def sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1,
                           decode_responses=True)

    def wait_ready(self, timeout: float = 30) -> None:
        """Until every sentinel knows the primary, every replica (in sync) and its peers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ok = True
                for port, _ in self.sentinels:
                    s = self.sentinel_client(port)
                    info = s.sentinel_master(SERVICE)
                    if int(info.get("num-slaves", 0)) < self.replicas or int(info.get("num-other-sentinels", 0)) < 2:
                        ok = False
                if ok and all(n.client().info("replication").get("master_link_status") == "up"
                              for n in self.nodes[1:]):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise RuntimeError("sentinel group did not become ready")

    def primary_port(self, *, unanimous: bool = False) -> int | None:
        """The primary's port according to a majority of the sentinels (``unanimous``: all
        of them) (None: no agreement)."""
        seen: dict[int, int] = {}
        for port, _ in self.sentinels:
            try:
                addr = self.sentinel_client(port).sentinel_get_master_addr_by_name(SERVICE)
                seen[int(addr[1])] = seen.get(int(addr[1]), 0) + 1
            except (redis.RedisError, TypeError, IndexError):
                continue
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= (len(self.sentinels) if unanimous else 2) else None

    def restart_failed_node(self, port: int, timeout: float = 30) -> None:
        """Bring a killed node back once every sentinel names the new primary. Nodes run
        with AOF, as in production, so it comes back with its data and is made a replica.
        Callers wait until the switch has settled, too: a node back too early is the
        candidate of a second failover if the new primary stalls (docs/scaling.md)."""
        deadline = time.monotonic() + timeout
        while self.primary_port(unanimous=True) in (None, port):
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not all switch to the new primary")
            time.sleep(0.1)
        self.node(port).start()

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def env(self) -> dict[str, str]:
        """The platform's settings for this group: host and port in the URL are ignored."""
        return {"REDIS_URL": f"redis://:{self.password}@127.0.0.1:1/0",
                "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p, _ in self.sentinels),
                "REDIS_SENTINEL_SERVICE": SERVICE}

    def stop(self) -> None:
        for _, proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for n in self.nodes:
            n.kill()
        if self.proxy is not None:
            self.proxy.close()


def run_module(module: str, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` with ``env`` on top of the test environment."""
    from tests.conftest import ROOT, TEST_ENV

    full = {**os.environ, **TEST_ENV, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)
