"""``jobctl demo``: seed the demo tenants, send the example jobs and the real domain jobs,
wait for a worker, then print their ledger rows and what each job did to the data."""

from __future__ import annotations

import datetime as dt
import imaplib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from cli.common import current, platform
from cli.output import plain_table
from jobcore.db import control_engine
from jobcore.settings import process_environment
from ledger.reader import RunFilter, query_runs

if TYPE_CHECKING:  # the seed and report modules import the actors, i.e. build the platform
    from cli.demo_seed import AgencySeed, EscrowSeed, ImapTarget

ESCROW_JOBS = ("job_dr_approval", "job_report_generation", "job_case_close_reminders", "job_account_balance_check",
               "job_user_offsite_tracking")
AGENCY_JOBS = ("agency_health_checks", "agency_overnight_aggregations")
COLUMNS = ("id", "actor_name", "tenant_id", "status", "resolution", "attempts", "wait_ms", "run_ms", "kwargs",
           "result")


@click.command()
@click.option("--timeout", type=float, default=60, show_default=True, help="seconds to wait for the worker")
@click.option("--imap-url", metavar="URL", help="imap://user:password@host:port of the demo mailbox "
              "(default: DEMO_IMAP_URL, which .ci/up writes to .env; without one the mailbox is not seeded)")
@click.option("--mail-dir", type=click.Path(file_okay=False, path_type=Path),
              help="where the local SMTP sink keeps messages (default: DEMO_MAIL_DIR, from .ci/up)")
def demo(timeout: float, imap_url: str | None, mail_dir: Path | None) -> None:
    """Seed the demo tenants (idempotent; each run adds a day's new work), run the example
    and domain jobs, print their runs and their effects."""
    from cli.demo_seed import ImapTarget

    env = process_environment()
    imap_url = imap_url or env.get("DEMO_IMAP_URL") or None
    mail_dir = mail_dir or (Path(env["DEMO_MAIL_DIR"]) if env.get("DEMO_MAIL_DIR") else None)
    try:
        imap = ImapTarget.parse(imap_url) if imap_url else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--imap-url / DEMO_IMAP_URL") from None
    sys.exit(run_demo(timeout, imap, mail_dir))


def _examples() -> list[Any]:
    from actors.examples import example, example_error, example_progress, example_with_args

    sent = [
        example.send("hello"),
        example_with_args.send(2, 40, label="answer", api_key="demo-secret-key"),
        example_progress.send(5, 0.2),
        example_error.send("a demo failure: retried twice, then ERROR"),
        example.send_with_options(args=("too late",), max_age=1),  # EXPIRED
    ]
    queued = example.send_with_options(args=("revoked before it ran",), delay=60_000)
    platform().revoke(queued.message_id, operator="demo")
    return [*sent, queued]


def _tenant(slug: str) -> Any:
    from tenancy.registry import list_tenants

    return next((t for t in list_tenants() if t.slug == slug), None)


def _seed_escrow(tenant: Any, now: dt.datetime, today: dt.date) -> EscrowSeed:
    from cli.demo_seed import seed_escrow
    from tenancy.session import tenant_session

    with tenant_session(tenant.id) as session:
        seed = seed_escrow(session, now=now, today=today)
    added = f"added {len(seed.added)} rows of the base set" if seed.added else "base set already present"
    click.echo(f"seed {tenant.slug}: {added}; round {seed.round}: DRs #{', #'.join(map(str, seed.due_requests))} "
               f"due for auto-approval, report request #{seed.report_request}, a case closing today, "
               "a case below its minimum balance")
    return seed


def _seed_agency(tenant: Any, imap: ImapTarget | None, now: dt.datetime) -> AgencySeed:
    from cli.demo_seed import seed_agency
    from tenancy.session import tenant_session

    with tenant_session(tenant.id) as session:
        try:
            seed = seed_agency(session, imap, now=now)
        except (OSError, imaplib.IMAP4.error) as exc:  # IMAP down or refusing: the rest of the demo still runs
            session.rollback()
            click.echo(f"seed {tenant.slug}: IMAP server {imap.host}:{imap.port} failed "  # type: ignore[union-attr]
                       f"({type(exc).__name__}: {exc}); mailbox not seeded, no email sync", err=True)
            seed = seed_agency(session, None, now=now)
    added = f"added {len(seed.added)} rows of the base set" if seed.added else "base set already present"
    mail = (f"round {seed.round}: {len(seed.message_ids)} new messages in the mailbox on "
            f"imap://{imap.host}:{imap.port}" if imap and seed.mailbox_id else
            "no IMAP server (DEMO_IMAP_URL unset): mailbox not seeded, no email sync")
    click.echo(f"seed {tenant.slug}: {added}; {mail}")
    return seed


def run_demo(timeout: float, imap: ImapTarget | None = None, mail_dir: Path | None = None) -> int:
    """Seed, send, wait for a worker, print the runs and their effects; 1 if a run did
    not finish within ``timeout``."""
    from cli.demo_report import agency_effects, escrow_effects, mail_sink_summary, wait_for_matching
    from cli.demo_seed import AGENCY_SLUG, ESCROW_SLUG
    from jobcore.context import job_context
    from tenancy.fanout import send_for_tenant

    started = time.time()
    now = dt.datetime.now(dt.UTC)
    today = dt.datetime.now(ZoneInfo("America/New_York")).date()  # the schedules' (and jobs') day
    escrow, agency = _tenant(ESCROW_SLUG), _tenant(AGENCY_SLUG)
    escrow_seed = _seed_escrow(escrow, now, today) if escrow else None
    agency_seed = _seed_agency(agency, imap, now) if agency else None
    for slug, found in ((ESCROW_SLUG, escrow), (AGENCY_SLUG, agency)):
        if found is None:
            click.echo(f"no tenant {slug}: its domain jobs are skipped (.ci/up creates it)", err=True)
    domain: dict[tuple[str, str], Any] = {}
    with job_context(tenant_id=None, request_id="demo"):
        sent = _examples()
        jobs = [(escrow, a) for a in ESCROW_JOBS] + [(agency, a) for a in AGENCY_JOBS]
        if agency_seed and agency_seed.mailbox_id:
            jobs.append((agency, "EMAIL_SYNC_AGENCY"))
        for tenant, actor_name in jobs:
            if tenant is not None:
                domain[(tenant.slug, actor_name)] = send_for_tenant(actor_name, tenant.id)
    ids = [m.message_id for m in sent] + [m.message_id for m in domain.values()]
    click.echo(f"demo: sent {len(ids)} jobs; waiting for a worker to finish them...")
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        current(quiet=True)
        rows = query_runs(control_engine(), RunFilter(message_ids=ids), limit=len(ids))
        if len(rows) == len(ids) and all(r["status"] == "FINISHED" for r in rows):
            break
        time.sleep(0.5)
    by_message = {r["message_id"]: r for r in rows}
    runs = {key: by_message.get(m.message_id) for key, m in domain.items()}
    if agency is not None and agency_seed is not None and agency_seed.message_ids:
        sync = runs.get((agency.slug, "EMAIL_SYNC_AGENCY"))
        if sync and sync.get("resolution") == "COMPLETED":
            wait_for_matching(agency.id, agency_seed, deadline)  # EMAIL_MATCHING follows the sync
    click.echo(plain_table(rows, COLUMNS))
    click.echo("\nwhat the jobs did:")
    lines: list[str] = []
    if escrow is not None and escrow_seed is not None:
        lines += escrow_effects(escrow.id, escrow_seed, {a: runs.get((escrow.slug, a)) for a in ESCROW_JOBS},
                                today, mail_dir)
    if agency is not None and agency_seed is not None:
        lines += agency_effects(agency.id, agency_seed,
                                {a: runs.get((agency.slug, a)) for a in (*AGENCY_JOBS, "EMAIL_SYNC_AGENCY")})
    if mail_dir is not None:
        lines.append(mail_sink_summary(mail_dir, started))
    for line in lines:
        click.echo(f"  - {line}")
    unfinished = [r for r in rows if r["status"] != "FINISHED"]
    if unfinished or len(rows) < len(ids):
        click.echo(f"demo: {len(ids) - len(rows) + len(unfinished)} runs did not finish within {timeout:g}s: "
                   "is a worker running?", err=True)
        return 1
    return 0


def register(group: click.Group) -> None:
    group.add_command(demo)
