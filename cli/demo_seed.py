"""The demo's data set, written through the domain models on the demo tenants.

Two parts, both safe to run again:

* the **base set**, looked up by natural keys (user e-mail, case number, agency slug,
  admin e-mail, case reference) and only added where missing: an escrow trust with three
  cases and their parties (one case below its minimum balance, one closing today, one
  disbursement request not due yet), an agency with four cases, their contacts and an
  intake mailbox on the local IMAP server;
* a **round** of new work per demo run, which is what a day brings and not a copy of
  earlier data: two disbursement requests whose auto-authorize window has expired, one
  report request, and new mail in the mailbox (twelve messages the first time, nine of
  them from or to a case's contacts or in their threads; three on later rounds). The
  round number comes from the data itself (report requests of the demo's case manager,
  Message-IDs in the mailbox), so a repeated or interrupted round never adds a message
  twice.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import re
from dataclasses import dataclass, field
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from actors.casemgmt import models as cm
from actors.escrow import models as es

ESCROW_SLUG = "demo-escrow"
AGENCY_SLUG = "demo-agency"
MAIL_DOMAIN = "demo.riverside.example"
IMAP_TIMEOUT_S = 10.0

# (e-mail, name, role): three individuals of the trust, their representative, staff.
ESCROW_USERS = [
    ("dana.alvarez@clients.example", "Dana Alvarez", es.IP),
    ("liam.brennan@clients.example", "Liam Brennan", es.IP),
    ("mei.chen@clients.example", "Mei Chen", es.IP),
    ("marcus.reed@reedlaw.example", "Marcus Reed", es.IP_REP),
    ("priya.shah@seedtrust.example", "Priya Shah", es.CASE_MANAGER),
    ("tom.becker@seedtrust.example", "Tom Becker", es.ESCROW_SPECIALIST),
    ("ops@seedtrust.example", "Operations Admin", es.ADMIN),
]
CASE_MANAGER_EMAIL = "priya.shah@seedtrust.example"
REPRESENTATIVE_EMAIL = "marcus.reed@reedlaw.example"
SPECIALIST_EMAIL = "tom.becker@seedtrust.example"
# (number, name, balance, minimum, days until the scheduled close, the case's IP)
ESCROW_CASES = [
    ("ST-2001", "Alvarez family", "42500.00", "10000.00", 60, "dana.alvarez@clients.example"),
    ("ST-2002", "Brennan family", "3200.00", "10000.00", 120, "liam.brennan@clients.example"),
    ("ST-2003", "Chen family", "18750.00", "5000.00", 0, "mei.chen@clients.example"),
]
IP_OF = {c[0]: c[5] for c in ESCROW_CASES}
CLOSING_TODAY, BELOW_MINIMUM, REPORTED = "ST-2003", "ST-2002", "ST-2001"
# (case, payee, amount) of each round's requests due for auto-approval.
DUE_REQUESTS = [("ST-2001", "Harbor Medical Group", "2400.00"), ("ST-2003", "Lakeside Counseling", "850.00")]
NOT_DUE = ("ST-2001", "Bayview Fertility Clinic", "6000.00")

AGENCY = ("Riverside Family Services", "riverside")
AGENCY_ADMINS = [("jordan.lee@riverside.example", "Jordan Lee"), ("sam.ortiz@riverside.example", "Sam Ortiz")]
MAILBOX_OWNER = "jordan.lee@riverside.example"
MAILBOX_ADDRESS = "intake@riverside.example"
# (reference, title, [(contact name, address)])
AGENCY_CASES = [
    ("RFS-101", "Custody review: Garcia", [("Maria Garcia", "maria.garcia@mail.example")]),
    ("RFS-102", "Adoption: Patel", [("Raj Patel", "raj.patel@mail.example"),
                                    ("Anita Patel", "anita.patel@mail.example")]),
    ("RFS-103", "Guardianship: Nguyen", [("Linh Nguyen", "linh.nguyen@mail.example")]),
    ("RFS-104", "Foster placement: Okafor", [("Chidi Okafor", "chidi.okafor@mail.example")]),
]
# (sender, recipients, subject, index of the message it replies to or None). The first
# round: 7 matched by a contact's address, 2 by thread (replies from outside), 3 unmatched.
FIRST_ROUND_MAIL = [
    ("maria.garcia@mail.example", [MAILBOX_ADDRESS], "Hearing date for the custody review", None),
    (MAILBOX_ADDRESS, ["maria.garcia@mail.example"], "Re: Hearing date for the custody review", 0),
    ("raj.patel@mail.example", [MAILBOX_ADDRESS], "Home study documents", None),
    ("counsel@patel-law.example", [MAILBOX_ADDRESS, "anita.patel@mail.example"], "Adoption filing checklist", None),
    ("linh.nguyen@mail.example", [MAILBOX_ADDRESS], "Guardianship forms signed", None),
    ("clerk@county-court.example", [MAILBOX_ADDRESS], "Re: Guardianship forms signed", 4),
    ("chidi.okafor@mail.example", [MAILBOX_ADDRESS], "Placement visit next week", None),
    ("caseworker@state-dcf.example", [MAILBOX_ADDRESS], "Re: Placement visit next week", 6),
    ("maria.garcia@mail.example", [MAILBOX_ADDRESS], "School records", None),
    ("newsletter@vendor.example", [MAILBOX_ADDRESS], "Spring newsletter", None),
    ("it-support@riverside.example", [MAILBOX_ADDRESS], "Password expiry notice", None),
    ("noreply@calendar.example", [MAILBOX_ADDRESS], "Weekly calendar digest", None),
]
NEXT_ROUND_MAIL = [
    ("raj.patel@mail.example", [MAILBOX_ADDRESS], "Question about the next visit", None),
    ("social.worker@state-dcf.example", [MAILBOX_ADDRESS], "Re: Question about the next visit", 0),
    ("newsletter@vendor.example", [MAILBOX_ADDRESS], "Summer newsletter", None),
]
T = TypeVar("T")
_ROUND_ID = re.compile(rf"<r(\d+)\.\d+@{re.escape(MAIL_DOMAIN)}>")


@dataclass
class EscrowSeed:
    """What the escrow part of the seed did, and the round's work to look for afterwards."""

    round: int
    added: list[str] = field(default_factory=list)
    due_requests: list[int] = field(default_factory=list)
    not_due_request: int | None = None
    report_request: int = 0
    closing_case: int = 0
    below_minimum_case: int = 0


@dataclass
class ImapTarget:
    """The demo mailbox's IMAP server, from ``imap://user:password@host:port``."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> ImapTarget:
        parts = urlsplit(url)
        if parts.scheme != "imap" or not parts.hostname or not parts.username or parts.password is None:
            raise ValueError("expected imap://user:password@host:port")
        return cls(parts.hostname, parts.port or 143, unquote(parts.username), unquote(parts.password))


@dataclass
class AgencySeed:
    """What the case-management part did; ``message_ids`` are the round's new mail."""

    round: int = 0
    added: list[str] = field(default_factory=list)
    mailbox_id: int | None = None
    message_ids: list[str] = field(default_factory=list)


def _get_or_add(session: Session, model: type[T], added: list[str], label: str, where: dict[str, object],
                **values: object) -> T:
    """The row of ``model`` matching ``where`` (a natural key), added with ``values`` if missing."""
    row = session.scalar(select(model).filter_by(**where))
    if row is None:
        row = model(**where, **values)
        session.add(row)
        session.flush()
        added.append(label)
    return row


def seed_escrow(session: Session, *, now: dt.datetime, today: dt.date) -> EscrowSeed:
    """The escrow base set (where missing) and one round of new work; commits."""
    added: list[str] = []
    users = {email: _get_or_add(session, es.User, added, f"user {email}", {"email": email}, name=name, role=role,
                                active=True, on_site=True)
             for email, name, role in ESCROW_USERS}
    cases: dict[str, es.Case] = {}
    for number, name, balance, minimum, days, ip in ESCROW_CASES:
        case = _get_or_add(session, es.Case, added, f"case {number}", {"number": number}, name=name,
                           balance=Decimal(balance), minimum_balance=Decimal(minimum),
                           scheduled_close_date=today + dt.timedelta(days=days))
        cases[number] = case
        for role, email in ((es.IP, ip), (es.IP_REP, REPRESENTATIVE_EMAIL), (es.CASE_MANAGER, CASE_MANAGER_EMAIL),
                            (es.ESCROW_SPECIALIST, SPECIALIST_EMAIL)):
            _get_or_add(session, es.CaseParty, added, f"party {email} on {number}",
                        {"case_id": case.id, "user_id": users[email].id, "role": role})
    # The data rolls forward: the closing case closes today on every demo day.
    cases[CLOSING_TODAY].scheduled_close_date = today
    manager = users[CASE_MANAGER_EMAIL]
    seed = EscrowSeed(round=1 + (session.scalar(select(func.count()).select_from(es.ReportRequest)
                                                .where(es.ReportRequest.user_id == manager.id)) or 0),
                      added=added, closing_case=cases[CLOSING_TODAY].id, below_minimum_case=cases[BELOW_MINIMUM].id)
    case_no, payee, amount = NOT_DUE
    waiting = session.scalar(select(es.DisbursementRequest).where(
        es.DisbursementRequest.case_id == cases[case_no].id, es.DisbursementRequest.payee == payee,
        es.DisbursementRequest.status == "PENDING", es.DisbursementRequest.auto_authorize_at > now))
    if waiting is None:
        waiting = es.DisbursementRequest(case_id=cases[case_no].id, requested_by=users[IP_OF[case_no]].id,
                                         payee=payee, amount=Decimal(amount), status="PENDING",
                                         auto_authorize_at=now + dt.timedelta(days=3))
        session.add(waiting)
        session.flush()
        added.append(f"DR #{waiting.id} (not due until {waiting.auto_authorize_at:%Y-%m-%d %H:%M} UTC)")
    seed.not_due_request = waiting.id
    # The round: requests whose 48-hour auto-authorize window has just expired ...
    for case_no, payee, amount in DUE_REQUESTS:
        dr = es.DisbursementRequest(case_id=cases[case_no].id, requested_by=users[IP_OF[case_no]].id, payee=payee,
                                    amount=Decimal(amount), status="PENDING",
                                    auto_authorize_at=now - dt.timedelta(hours=1))
        session.add(dr)
        session.flush()
        seed.due_requests.append(dr.id)
    # ... and the case manager's request for a case summary report.
    report = es.ReportRequest(user_id=manager.id, case_id=cases[REPORTED].id, report_type="case_summary",
                              status=es.REPORT_PENDING)
    session.add(report)
    session.flush()
    seed.report_request = report.id
    session.commit()
    return seed


def seed_agency(session: Session, imap: ImapTarget | None, *, now: dt.datetime) -> AgencySeed:
    """The agency base set (where missing), its mailbox connected to ``imap``, and one
    round of new mail delivered to it over IMAP (skipped without a server); commits."""
    from actors.casemgmt.sync import connect_mailbox

    seed = AgencySeed()
    name, slug = AGENCY
    agency = _get_or_add(session, cm.Agency, seed.added, f"agency {slug}", {"slug": slug}, name=name)
    admins = {email: _get_or_add(session, cm.Admin, seed.added, f"admin {email}", {"email": email},
                                 agency_id=agency.id, name=admin_name)
              for email, admin_name in AGENCY_ADMINS}
    for reference, title, contacts in AGENCY_CASES:
        case = _get_or_add(session, cm.Case, seed.added, f"case {reference}", {"reference": reference},
                           agency_id=agency.id, owner_admin_id=admins[MAILBOX_OWNER].id, title=title)
        for contact_name, address in contacts:
            _get_or_add(session, cm.Contact, seed.added, f"contact {address}",
                        {"case_id": case.id, "email": address}, name=contact_name)
    session.commit()
    if imap is None:
        return seed
    owner = admins[MAILBOX_OWNER]
    # Reconnecting stores the current credential (re-encrypted with today's key) and keeps
    # the sync cursor: mail already synced is not fetched again.
    mailbox = connect_mailbox(session, owner.id, email_address=MAILBOX_ADDRESS, host=imap.host,
                              port=imap.port, username=imap.user, secret=imap.password, use_ssl=False,
                              allow_plaintext_auth=True)  # loopback dovecot, plain text by design
    session.commit()
    seed.mailbox_id = mailbox.id
    seed.round, seed.message_ids = deliver_round(imap, now=now)
    return seed


def round_messages(round_no: int, now: dt.datetime) -> list[tuple[str, bytes]]:
    """The round's messages as (Message-ID, RFC 5322 bytes), oldest first."""
    plan = FIRST_ROUND_MAIL if round_no == 1 else NEXT_ROUND_MAIL
    ids = [f"<r{round_no}.{i}@{MAIL_DOMAIN}>" for i in range(len(plan))]
    out = []
    for i, (sender, to, subject, replies_to) in enumerate(plan):
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = subject, sender, ", ".join(to)
        msg["Date"] = format_datetime(now - dt.timedelta(minutes=5 * (len(plan) - i)))
        msg["Message-ID"] = ids[i]
        if replies_to is not None:
            msg["In-Reply-To"] = msg["References"] = ids[replies_to]
        msg.set_content(f"{subject}\n\n(demo message {i + 1} of round {round_no})\n")
        out.append((ids[i], bytes(msg)))
    return out


def deliver_round(imap: ImapTarget, *, now: dt.datetime) -> tuple[int, list[str]]:
    """APPEND the next round's messages to the INBOX (those not there yet: an interrupted
    round is completed, never doubled); returns the round number and its Message-IDs."""
    conn = imaplib.IMAP4(imap.host, imap.port, timeout=IMAP_TIMEOUT_S)
    try:
        conn.login(imap.user, imap.password)
        conn.select("INBOX")
        present = _demo_message_ids(conn)
        rounds = [int(m.group(1)) for mid in present if (m := _ROUND_ID.fullmatch(mid))]
        latest = max(rounds, default=0)
        expected = len(FIRST_ROUND_MAIL) if latest == 1 else len(NEXT_ROUND_MAIL)
        # A round cut short (fewer messages than planned) is completed instead of starting the next.
        round_no = latest if latest and rounds.count(latest) < expected else latest + 1
        messages = round_messages(round_no, now)
        for message_id, raw in messages:
            if message_id not in present:
                typ, data = conn.append("INBOX", None, None, raw)
                if typ != "OK":
                    raise RuntimeError(f"IMAP APPEND refused: {data!r}")
        return round_no, [mid for mid, _ in messages]
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _demo_message_ids(conn: imaplib.IMAP4) -> set[str]:
    typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", f"@{MAIL_DOMAIN}")
    uids = data[0].split() if typ == "OK" and data and data[0] else []
    if not uids:
        return set()
    typ, fetched = conn.uid("FETCH", b",".join(uids).decode(), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    found = set()
    for item in fetched or []:
        if isinstance(item, tuple):
            found.update(re.findall(r"<[^<>\s]+>", item[1].decode(errors="replace")))
    return found
