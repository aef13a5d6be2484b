"""5,000 messages across 10 agencies, synced by a real worker with bounded memory."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import wait_for
from tests.support.casemgmt_data import connect_imap_mailbox, seed_agency, tenant_db_session
from tests.support.imap_messages import make_message
from tests.support.ledger import count

pytestmark = pytest.mark.integration

AGENCIES = 10
PER_MAILBOX = 500
# ~4 KB bodies: 5,000 messages are ~20 MB on the server, far more than one batch.
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 70)[:4000]
PEAK_RSS_LIMIT_KB = 250 * 1024


def _status_kb(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match, f"{field} not in /proc/{pid}/status"
    return int(match.group(1))


def test_5000_messages_across_10_agencies_sync_with_bounded_memory(make_agencies, imap_server, start_worker):
    from tenancy.fanout import fan_out

    tenants = make_agencies(AGENCIES)
    for n, tenant in enumerate(tenants):
        session = tenant_db_session(tenant.database_url)
        seeded = seed_agency(session, cases=5)
        clients = list(seeded.contact_emails.values())
        user, _ = imap_server.add_user()
        imap_server.seed_maildir(user, (make_message(f"bulk {n}.{i}", clients[i % 5] if i % 10 == 0 else
                                                     f"sender{i}@elsewhere.example", [f"{user}@agency.example"],
                                                     message_id=f"<bulk.{n}.{i}@test>", body=BODY)
                                        for i in range(PER_MAILBOX)))
        connect_imap_mailbox(session, seeded.admin_ids[0], imap_server, user)
        session.close()

    worker = start_worker(processes=1, threads=4)
    [child] = wait_for(worker.child_pids, 10, what="worker child process")
    baseline_kb = _status_kb(child, "VmHWM")
    started = time.monotonic()
    messages = fan_out("EMAIL_SYNC_AGENCY", product="casemgmt")
    assert len(messages) == AGENCIES
    ids = [m.message_id for m in messages]
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:ids) AND status = 'FINISHED'",
                           ids=ids) == AGENCIES, 240, interval=0.5, what="10 agency syncs")
    wait_for(lambda: count("SELECT count(*) FROM job_runs WHERE actor_name = 'EMAIL_MATCHING' "
                           "AND status = 'FINISHED'") == AGENCIES, 120, interval=0.5, what="10 matching runs")
    elapsed = time.monotonic() - started
    peak_kb = _status_kb(child, "VmHWM")
    assert count("SELECT count(*) FROM job_runs WHERE message_id = ANY(:ids) AND resolution = 'COMPLETED'",
                 ids=ids) == AGENCIES

    total = matched = 0
    for tenant in tenants:
        session = tenant_db_session(tenant.database_url)
        n, distinct, m = session.execute(text(
            "SELECT count(*), count(DISTINCT message_id), (SELECT count(*) FROM casemgmt.email_matches) FROM "
            "casemgmt.emails")).one()
        assert n == distinct == PER_MAILBOX
        assert m == PER_MAILBOX // 10
        total += n
        matched += m
        session.close()
    assert total == AGENCIES * PER_MAILBOX
    print(f"\n[bulk sync] {total} messages, {AGENCIES} agencies, {elapsed:.1f} s; worker child peak RSS "
          f"{peak_kb / 1024:.1f} MiB (after start-up {baseline_kb / 1024:.1f} MiB, growth "
          f"{(peak_kb - baseline_kb) / 1024:.1f} MiB); {matched} matched")
    assert peak_kb < PEAK_RSS_LIMIT_KB
