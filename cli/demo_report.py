"""What the demo's jobs did, read back from the tenant data and the runs' results: which
requests were approved, which report was e-mailed to whom, what mail was synced and
matched, and what was already done earlier today (the jobs are idempotent per day)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from email import message_from_binary_file
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select

from actors.casemgmt import models as cm
from actors.escrow import models as es
from cli.demo_seed import MAILBOX_ADDRESS, AgencySeed, EscrowSeed

Run = dict[str, Any] | None


def _run(run: Run) -> str:
    if run is None:
        return "not run"
    if run.get("resolution") != "COMPLETED":
        return f"run {run['id']} {run.get('status')}/{run.get('resolution')}"
    return f"run {run['id']}"


def _result(run: Run) -> dict[str, Any]:
    result = (run or {}).get("result")
    return result if isinstance(result, dict) else {}


def _money(value: Any) -> str:
    return f"{value:,.2f}"


def find_mail(mail_dir: Path | None, subject_prefix: str) -> Path | None:
    """The newest message in the SMTP sink's directory whose subject starts so."""
    if mail_dir is None or not mail_dir.is_dir():
        return None
    for path in sorted(mail_dir.glob("*.eml"), reverse=True):
        with path.open("rb") as f:
            if str(message_from_binary_file(f).get("Subject", "")).startswith(subject_prefix):
                return path
    return None


def escrow_effects(tenant_id: int, seed: EscrowSeed, runs: dict[str, Run], today: dt.date,
                   mail_dir: Path | None) -> list[str]:
    """One line per escrow job: what changed in the tenant's data."""
    from tenancy.session import tenant_session

    with tenant_session(tenant_id) as s:
        return [_approvals(s, seed, runs["job_dr_approval"]),
                _report(s, seed, runs["job_report_generation"], mail_dir),
                _close_reminder(s, seed, runs["job_case_close_reminders"], today),
                _balance(s, seed, runs["job_account_balance_check"], today),
                _offsite(runs["job_user_offsite_tracking"])]


def _offsite(run: Run) -> str:
    users = _result(run).get("users", 0)
    said = f"{users} users marked off-site" if users else "every user was off-site already (nothing to do)"
    return f"user off-site tracking ({_run(run)}): {said}"


def _approvals(s: Any, seed: EscrowSeed, run: Run) -> str:
    due = s.scalars(select(es.DisbursementRequest).where(es.DisbursementRequest.id.in_(seed.due_requests))
                    .order_by(es.DisbursementRequest.id)).all()
    cases = {c.id: c.number for c in s.scalars(select(es.Case))}
    approved = [d for d in due if d.status == "APPROVED"]
    said = []
    if approved:
        said.append(f"approved DR {', '.join(f'#{d.id}' for d in approved)} ("
                    + "; ".join(f"{cases[d.case_id]}: {_money(d.amount)} to {d.payee}" for d in approved) + ")")
        sent = s.scalar(select(func.count()).select_from(es.Notification).where(
            es.Notification.status == "SENT",
            or_(*[es.Notification.dedupe_key.like(f"dr_approved:{d.id}:%") for d in approved])))
        said.append(f"{sent} notices e-mailed to the cases' IPs, IP reps and case managers")
    missed = [d for d in due if d.status != "APPROVED"]
    if missed:
        said.append("NOT approved: " + ", ".join(f"DR #{d.id} ({d.status})" for d in missed))
    waiting = s.get(es.DisbursementRequest, seed.not_due_request) if seed.not_due_request else None
    if waiting is not None and waiting.status == "PENDING" and waiting.auto_authorize_at:
        said.append(f"DR #{waiting.id} stays PENDING until {waiting.auto_authorize_at:%Y-%m-%d %H:%M} UTC "
                    "(its window has not expired)")
    return f"DR auto-approval ({_run(run)}): " + "; ".join(said)


def _report(s: Any, seed: EscrowSeed, run: Run, mail_dir: Path | None) -> str:
    request = s.get(es.ReportRequest, seed.report_request)
    user = s.get(es.User, request.user_id)
    head = f"report generation ({_run(run)})"
    if request.status != es.REPORT_EMAILED:
        return f"{head}: report #{request.id} NOT e-mailed (status {request.status}: {request.last_error or '-'})"
    by = "" if request.id in (_result(run).get("emailed") or []) else " (by the scheduled run, which came first)"
    mail = find_mail(mail_dir, f"Your report #{request.id} ")
    where = f" -> {mail}" if mail else ""
    return f"{head}: report #{request.id} e-mailed to {user.email} ({request.file_name}){by}{where}"


def _close_reminder(s: Any, seed: EscrowSeed, run: Run, today: dt.date) -> str:
    case = s.get(es.Case, seed.closing_case)
    head = f"case close reminders ({_run(run)})"
    notices = s.scalars(select(es.Notification).where(
        es.Notification.kind == "case_close_reminder",
        es.Notification.dedupe_key.like(f"close:{case.id}:{today.isoformat()}:%"))).all()
    to = ", ".join(f"{n.recipient} ({n.status})" for n in notices) or "no Escrow Specialist"
    if case.id in (_result(run).get("reminded") or []):
        return f"{head}: case {case.number} closes today: reminder e-mailed to {to}"
    if s.get(es.CloseReminder, (case.id, today)) is not None:
        return (f"{head}: case {case.number} closes today: already reminded earlier today ({to}); "
                "one reminder per case and day")
    return f"{head}: case {case.number} was NOT reminded"


def _balance(s: Any, seed: EscrowSeed, run: Run, today: dt.date) -> str:
    case = s.get(es.Case, seed.below_minimum_case)
    head = f"balance check ({_run(run)})"
    what = f"case {case.number} holds {_money(case.balance)}, below its minimum of {_money(case.minimum_balance)}"
    if case.id in (_result(run).get("alerted") or []):
        return f"{head}: {what}: alert recorded"
    alert = s.scalar(select(es.BalanceAlert).where(es.BalanceAlert.case_id == case.id,
                                                   es.BalanceAlert.check_date == today))
    if alert is not None:
        return f"{head}: {what}: already alerted for today (one alert per case and check day)"
    return f"{head}: {what}: NO alert recorded"


def _round_emails(s: Any, seed: AgencySeed) -> list[Any]:
    return list(s.scalars(select(cm.Email).where(cm.Email.mailbox_id == seed.mailbox_id,
                                                 cm.Email.message_id.in_(seed.message_ids))))


def wait_for_matching(tenant_id: int, seed: AgencySeed, deadline: float) -> None:
    """Wait (until ``deadline``, monotonic) for EMAIL_MATCHING, which the sync triggers
    on success, to have examined the round's synced messages."""
    from tenancy.session import tenant_session

    while time.monotonic() < deadline:
        with tenant_session(tenant_id) as s:
            emails = _round_emails(s, seed)
        if emails and all(e.matched_at is not None for e in emails):
            return
        time.sleep(0.5)


def agency_effects(tenant_id: int, seed: AgencySeed, runs: dict[str, Run]) -> list[str]:
    """One line per case-management job: mail synced and matched, checks, statistics."""
    from tenancy.session import tenant_session

    lines = []
    with tenant_session(tenant_id) as s:
        if seed.mailbox_id is not None:
            lines.append(_sync(s, seed, runs["EMAIL_SYNC_AGENCY"]))
    health, aggregations = runs["agency_health_checks"], runs["agency_overnight_aggregations"]
    lines.append(f"data-integrity checks ({_run(health)}): {_result(health).get('checks_failed', '?')} failed")
    lines.append(f"overnight aggregations ({_run(aggregations)}): {_result(aggregations).get('rows', 0)} "
                 "daily statistics rows")
    return lines


def _sync(s: Any, seed: AgencySeed, run: Run) -> str:
    emails = _round_emails(s, seed)
    ids = [e.id for e in emails]
    matches = s.execute(select(cm.EmailMatch.email_id, cm.EmailMatch.match_type, cm.Case.reference)
                        .join(cm.Case, cm.Case.id == cm.EmailMatch.case_id)
                        .where(cm.EmailMatch.email_id.in_(ids))).all() if ids else []
    matched = {m.email_id for m in matches}
    how = Counter(m.match_type for m in matches)
    per_case = Counter(m.reference for m in matches)
    head = f"email sync + matching ({_run(run)}, stored {_result(run).get('stored', 0)})"
    line = (f"{head}: synced {len(emails)} messages of {MAILBOX_ADDRESS}, matched {len(matched)} to cases "
            f"({', '.join(f'{n} by {k}' for k, n in sorted(how.items()))}), {len(emails) - len(matched)} unmatched")
    if per_case:
        line += "; " + ", ".join(f"{ref}: {n}" for ref, n in sorted(per_case.items()))
    if len(emails) < len(seed.message_ids):
        line += f"; {len(seed.message_ids) - len(emails)} of the round's messages NOT synced"
    return line


def mail_sink_summary(mail_dir: Path, since: float) -> str:
    """How many messages the local SMTP sink received during the demo, and where they are."""
    new = [p for p in mail_dir.glob("*.eml") if p.stat().st_mtime >= since - 1] if mail_dir.is_dir() else []
    subjects: Counter[str] = Counter()
    for path in new:
        with path.open("rb") as f:
            subject = str(message_from_binary_file(f).get("Subject", ""))
        subjects[subject.split(" #")[0].split(" (")[0]] += 1
    kinds = ", ".join(f"{n} x {k}" for k, n in subjects.most_common())
    where = f"local SMTP sink: {len(new)} e-mails received during the demo in {mail_dir}/"
    return where + (f" ({kinds})" if kinds else "")
