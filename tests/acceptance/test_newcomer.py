"""The first hour of a new user, played on a fresh clone (issue 15).

``git clone`` of this checkout's HEAD (committed files only: what a newcomer gets), then
``bash .ci/up`` with the demo, in its own session and process group as a terminal runs it.
From a second environment with nothing exported but PATH and HOME, ``jobctl runs``,
``jobctl schedules`` and ``jobctl tenants list`` must work on the demo's data (they find
it through the ``.env`` that ``.ci/up`` wrote). The demo's output must show real effects
(an approval, a report e-mail that is in the SMTP sink's directory, synced mail). Then
SIGINT to the process group, as Ctrl-C sends it: within 10 s nothing that ``.ci/up``
started may be left, looked up by session, by the process groups of the pids it recorded
and by those pids, and nothing may have needed a SIGKILL. A second ``.ci/up`` (stopping
after its demo) creates nothing twice and shows the next round of work.

Private control database (its tenant databases are named after it), Redis namespace and
ports, so it collides with no other run. The clone reuses this virtualenv (``VENV=``): its
``jobctl`` runs the packages the venv was installed from (this checkout, the same HEAD once
committed); the processes ``.ci/up`` starts with ``python -m`` and ``dramatiq`` run the clone's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_PG, BASE_REDIS, IN_CI, ROOT, SESSION_TAG, _unavailable, drop_database

pytestmark = pytest.mark.acceptance

VENV = Path(sys.executable).parent.parent
UP_DEADLINE_S = 120  # .ci/up on an installed machine, demo included, takes ~20 s
STOP_WITHIN_S = 10


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, pgid, sid, state) of every process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        found.append((int(entry.name), int(fields[2]), int(fields[3]), fields[0]))
    return found


def _survivors(session: int, pids: set[int]) -> list[tuple[int, int, int, str]]:
    return [p for p in _processes() if p[3] != "Z" and (p[2] == session or p[1] in pids or p[0] in pids)]


@pytest.fixture()
def clone() -> Iterator[Path]:
    stamp = VENV / f".installed-{hashlib.sha1((ROOT / 'pyproject.toml').read_bytes()).hexdigest()[:12]}"
    if not stamp.exists():  # .ci/up would pip-install the clone into this venv: never from a test
        pytest.skip(f"{VENV} is not installed for this pyproject.toml (run: source .ci/lib.sh && ensure_venv)")
    if shutil.which("git") is None:
        _unavailable("git")
    # Not under pytest's 0700 tmp tree: dovecot's unprivileged auth process reads run/imap.
    top = Path(tempfile.mkdtemp(prefix="newcomer_"))
    top.chmod(0o755)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(top / "repo")], check=True, timeout=60)
    yield top / "repo"
    shutil.rmtree(top, ignore_errors=True)


def test_fresh_clone_up_second_shell_demo_effects_and_ctrl_c(clone: Path, redis_url: str) -> None:
    if not os.path.exists("/usr/sbin/dovecot") and not shutil.which("dovecot"):
        _unavailable("dovecot (the demo's IMAP server)")
    control = f"jpt_{SESSION_TAG}_up"
    namespace = f"jpt{SESSION_TAG}up"
    exporter, console, smtp, imap = _free_ports(4)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "VENV": str(VENV),
           "TEST_PG_URL": BASE_PG, "DATABASE_URL": f"{BASE_PG}/{control}", "REDIS_URL": BASE_REDIS,
           "REDIS_NAMESPACE": namespace, "EXPORTER_PORT": str(exporter), "CONSOLE_PORT": str(console),
           "SMTP_PORT": str(smtp), "DEMO_IMAP_PORT": str(imap)}
    log = clone.parent / "up.log"

    def default_sigint() -> None:  # as a terminal's shell starts it (pytest may run with SIGINT ignored)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with log.open("w") as out:
        up = subprocess.Popen(["bash", ".ci/up"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=default_sigint)
    recorded: set[int] = set()
    try:
        deadline = time.monotonic() + UP_DEADLINE_S
        while "Ctrl-C stops everything" not in log.read_text():
            assert up.poll() is None, f".ci/up exited with {up.returncode}:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f".ci/up not up after {UP_DEADLINE_S}s:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
        output = log.read_text()
        recorded = {int(line.split()[1]) for line in (clone / "run" / "pids").read_text().splitlines()}
        assert len(recorded) == 6, output  # smtp, imap, worker, scheduler, exporter, console

        # The demo did real work, and said so.
        assert "approved DR #" in output and "notices e-mailed" in output, output
        assert "report #1 e-mailed to priya.shah@seedtrust.example" in output, output
        assert "synced 12 messages" in output and "matched 9 to cases" in output, output
        assert "closes today: reminder e-mailed to tom.becker@seedtrust.example" in output, output
        reports = [p for p in (clone / "run" / "mail").glob("*.eml") if b"Subject: Your report #1 " in p.read_bytes()]
        assert len(reports) == 1 and b"case-1-report.csv" in reports[0].read_bytes()

        # .env holds the settings and secrets, and git ignores it (and run/).
        assert f"DATABASE_URL='{BASE_PG}/{control}'" in (clone / ".env").read_text()
        assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True,
                              check=True).stdout == ""

        # A second shell: nothing exported, only PATH and HOME.
        second = {"PATH": f"{VENV}/bin:/usr/bin:/bin", "HOME": env["HOME"]}
        expect = {("runs",): ["job_dr_approval", "job_report_generation", "EMAIL_SYNC_AGENCY", "EMAIL_MATCHING"],
                  ("schedules",): ["dr_auto_approval", "report_generation", "email_sync"],
                  ("tenants", "list"): ["demo-escrow", "demo-agency"],
                  # The private control database's tenants: the settings came from the clone's .env.
                  ("tenants", "list", "--json"): [f"/{control}_demo_escrow", f"/{control}_demo_agency"]}
        for args, rows in expect.items():
            done = subprocess.run(["jobctl", *args], cwd=clone, env=second, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (args, done.stderr)
            assert "Traceback" not in done.stderr
            for row in rows:
                assert row in done.stdout, (args, row, done.stdout)

        # Ctrl-C.
        session = up.pid
        assert {p[0] for p in _survivors(session, recorded)} >= recorded
        os.killpg(up.pid, signal.SIGINT)
        start = time.monotonic()
        rc = up.wait(STOP_WITHIN_S + 5)
        left = _survivors(session, recorded)
        elapsed = time.monotonic() - start
        assert not left, f"still running after SIGINT: {left}"
        assert elapsed < STOP_WITHIN_S, elapsed
        assert rc == 130
        output = log.read_text()
        assert "SIGKILL" not in output, output[-2000:]  # each process stopped on its own
        assert "stopped: smtp imap worker scheduler exporter console" in output
        worker_log = (clone / "run" / "worker.log").read_text()
        assert "Stopping worker process" in worker_log and "Killing worker process" not in worker_log

        # A second .ci/up: nothing is created twice, the demo shows the new day's work and
        # says what was already done today.
        again = subprocess.run(["bash", ".ci/up"], cwd=clone, env={**env, "UP_EXIT_AFTER_DEMO": "1"},
                               capture_output=True, text=True, timeout=UP_DEADLINE_S, preexec_fn=default_sigint,
                               start_new_session=True)
        second_output = again.stdout + again.stderr
        assert again.returncode == 0, second_output[-4000:]
        for line in ("tenant demo-escrow (escrow) exists", "seed demo-escrow: base set already present; round 2",
                     "seed demo-agency: base set already present; round 2: 3 new messages", "approved DR #",
                     "report #2 e-mailed to", "already reminded earlier today", "already alerted for today",
                     "synced 3 messages"):
            assert line in second_output, (line, second_output[-4000:])
        tenants = subprocess.run(["jobctl", "tenants", "list", "--json"], cwd=clone, env=second, capture_output=True,
                                 text=True, timeout=60, check=True).stdout
        assert tenants.count('"slug"') == 2
        second_pids = {int(line.split()[1]) for line in (clone / "run" / "pids").read_text().splitlines()}
        assert len(second_pids) == 6 and not _survivors(-1, second_pids)  # it stopped what it started
    finally:
        recorded |= {int(line.split()[1]) for line in (clone / "run" / "pids").read_text().splitlines()} \
            if (clone / "run" / "pids").exists() else set()
        for pid, *_ in _survivors(up.pid, recorded):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        up.wait(10)
        for name in (control, f"{control}_demo_escrow", f"{control}_demo_agency"):
            drop_database(name)
        import redis

        client = redis.Redis.from_url(BASE_REDIS)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    if IN_CI:
        print(output)  # the demo's output, for the CI log
