"""Email sync: stream a mailbox's new messages into the agency database.

Safety rules, each relied on by a test:

* Incremental: only UIDs above the mailbox cursor (UIDVALIDITY, last UID) are fetched;
  the cursor advances with each committed batch, so a crash resumes after the last batch.
* UIDVALIDITY change: the folder is re-read from UID 1; emails are keyed by
  (mailbox, Message-ID), so known messages only get their new UID, never a second row.
* Redelivery / concurrent duplicates: inserts are ``ON CONFLICT DO UPDATE`` on that key,
  so processing the same sync message twice (even at the same time) stores each email once.
* Bounded memory: ``batch_size`` messages at a time, Core inserts (no ORM identity map).
* Disconnect: each batch first locks the mailbox row and checks it is still connected;
  a disconnected mailbox ends the sync cleanly (status ``skipped``), and no batch can be
  written after EMAIL_SYNC_DISCONNECT has committed.

Sync only adds: a message deleted on the server stays in the agency database (synced
mail is part of the case record), as does all mail of a disconnected mailbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import case, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from actors.casemgmt import imap_provider  # noqa: F401 - registers the "imap" provider
from actors.casemgmt.credentials import decrypt_credential, encrypt_credential
from actors.casemgmt.errors import CaseManagementError, MailProviderError
from actors.casemgmt.models import Admin, Email, Mailbox
from actors.casemgmt.providers import FetchedMessage, MailboxAccount, MailProvider, get_provider
from jobcore.errors import PlatformError
from jobcore.redaction import get_redactor

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200
ProviderLookup = Callable[[str], MailProvider]


@dataclass
class SyncResult:
    """Outcome of syncing one mailbox."""

    mailbox_id: int
    status: str                 # synced | skipped | failed
    fetched: int = 0
    stored: int = 0             # new rows (a re-fetched known message is not counted)
    full_resync: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MailboxNotFound(CaseManagementError):
    """No mailbox for this admin."""


def connect_mailbox(session: Session, admin_id: int, *, email_address: str, host: str, port: int,
                    username: str, secret: str, use_ssl: bool = True, provider: str = "imap",
                    credential_kind: str = "password", starttls: bool = False,
                    allow_plaintext_auth: bool = False) -> Mailbox:
    """Store (or reconnect) an admin's mailbox with its credential encrypted.

    Reconnecting keeps the cursor: the UIDVALIDITY check decides whether a full resync
    is needed."""
    mailbox = session.scalar(select(Mailbox).where(Mailbox.admin_id == admin_id))
    if mailbox is None:
        mailbox = Mailbox(admin_id=admin_id, last_uid=0)
        session.add(mailbox)
    mailbox.provider = provider
    mailbox.email_address = email_address
    mailbox.host, mailbox.port, mailbox.use_ssl, mailbox.username = host, port, use_ssl, username
    mailbox.starttls, mailbox.allow_plaintext_auth = starttls, allow_plaintext_auth
    mailbox.credential_ciphertext = encrypt_credential(secret)
    mailbox.credential_kind = credential_kind
    mailbox.status = "connected"
    mailbox.connected_at = func.now()
    mailbox.disconnected_at = None
    mailbox.last_error = None
    # New credentials: the failure streak of the old ones is over.
    mailbox.failing_since = None
    mailbox.consecutive_failures = 0
    session.flush()
    return mailbox


def disconnect_mailbox(session: Session, admin_id: int) -> bool:
    """Stop future syncs of the admin's mailbox and delete its credential; synced mail
    stays. Returns False when the admin has no connected mailbox (idempotent)."""
    result = session.execute(
        update(Mailbox)
        .where(Mailbox.admin_id == admin_id, Mailbox.status != "disconnected")
        .values(status="disconnected", credential_ciphertext=None, disconnected_at=func.now())
    )
    changed = bool(result.rowcount)  # type: ignore[attr-defined]
    log.info("mailbox of admin %s disconnected: %s", admin_id, changed)
    return changed


def _rows(mailbox_id: int, validity: int, batch: list[FetchedMessage]) -> list[dict[str, Any]]:
    # One row per Message-ID: the same message twice in one statement would make
    # ON CONFLICT DO UPDATE fail ("cannot affect row a second time").
    by_id: dict[str, dict[str, Any]] = {}
    for m in batch:
        by_id[m.message_id] = {
            "mailbox_id": mailbox_id, "message_id": m.message_id, "uidvalidity": validity,
            "provider_uid": m.uid, "thread_id": m.thread_id, "in_reply_to": m.in_reply_to,
            "subject": m.subject, "from_address": m.from_address, "to_addresses": m.to_addresses,
            "cc_addresses": m.cc_addresses, "sent_at": m.sent_at, "size_bytes": m.size_bytes,
            "body_preview": m.body_preview,
        }
    return list(by_id.values())


def _lock_if_connected(session: Session, mailbox_id: int) -> bool:
    status = session.execute(
        select(Mailbox.status, Mailbox.credential_ciphertext.is_not(None))
        .where(Mailbox.id == mailbox_id).with_for_update()
    ).first()
    return status is not None and status[0] == "connected" and bool(status[1])


def _store_batch(session: Session, mailbox_id: int, validity: int, batch: list[FetchedMessage]) -> int | None:
    """Insert one batch and advance the cursor in one transaction; None if disconnected."""
    if not _lock_if_connected(session, mailbox_id):
        session.rollback()
        return None
    stored = 0
    rows = _rows(mailbox_id, validity, batch)
    if rows:
        ins = insert(Email).values(rows)
        stmt: Any = ins.on_conflict_do_update(
            constraint="uq_emails_mailbox_message_id",
            set_={"provider_uid": ins.excluded.provider_uid, "uidvalidity": ins.excluded.uidvalidity},
        ).returning(literal_column("(xmax = 0)"))
        # xmax = 0 only on freshly inserted rows: counts new emails, not re-fetched ones.
        stored = sum(1 for (inserted,) in session.execute(stmt) if inserted)
    max_uid = max((m.uid for m in batch), default=0)
    session.execute(
        update(Mailbox).where(Mailbox.id == mailbox_id).values(
            last_uid=case((Mailbox.uidvalidity == validity, func.greatest(Mailbox.last_uid, max_uid)),
                          else_=max_uid),
            uidvalidity=validity,
        )
    )
    session.commit()
    return stored


def sync_mailbox(session: Session, mailbox_id: int, *, providers: ProviderLookup = get_provider,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> SyncResult:
    """Fetch the mailbox's messages after its cursor and store them, batch by batch.

    Commits as it goes. A disconnected mailbox returns status ``skipped``; a provider
    failure is recorded on the mailbox (``last_error``) and raised."""
    # populate_existing: another session (a concurrent or redelivered sync) may have
    # advanced the cursor since this session last loaded the Mailbox; read it afresh.
    mailbox = session.get(Mailbox, mailbox_id, populate_existing=True)
    if mailbox is None:
        return SyncResult(mailbox_id, "skipped", reason="missing")
    if mailbox.status != "connected" or mailbox.credential_ciphertext is None:
        return SyncResult(mailbox_id, "skipped", reason="disconnected")
    account = MailboxAccount(mailbox.id, mailbox.provider, mailbox.host, mailbox.port, mailbox.use_ssl,
                             mailbox.username or mailbox.email_address, mailbox.folder, starttls=mailbox.starttls,
                             allow_plaintext_auth=mailbox.allow_plaintext_auth)
    ciphertext = mailbox.credential_ciphertext
    known_validity, last_uid = mailbox.uidvalidity, mailbox.last_uid
    session.commit()  # no transaction stays open while we talk to the mail server
    result = SyncResult(mailbox_id, "synced")
    try:
        # Inside the try: a credential that no longer decrypts (its key rotated out) is this
        # mailbox's failure, recorded on its row like a refused login.
        secret = decrypt_credential(ciphertext)
        with providers(account.provider).connect(account, secret) as conn:
            state = conn.folder_state()
            result.full_resync = known_validity is not None and known_validity != state.validity
            start = last_uid if known_validity == state.validity else 0
            if result.full_resync:
                log.warning("mailbox %s: UIDVALIDITY changed %s -> %s, full resync", mailbox_id,
                            known_validity, state.validity)
            for batch in conn.fetch_after(start, batch_size):
                stored = _store_batch(session, mailbox_id, state.validity, batch)
                if stored is None:
                    log.info("mailbox %s disconnected during sync; stopping", mailbox_id)
                    return SyncResult(mailbox_id, "skipped", result.fetched, result.stored,
                                      result.full_resync, "disconnected")
                result.fetched += len(batch)
                result.stored += stored
            if not _lock_if_connected(session, mailbox_id):
                session.rollback()
                return SyncResult(mailbox_id, "skipped", result.fetched, result.stored, result.full_resync,
                                  "disconnected")
            values: dict[str, Any] = {"last_synced_at": func.now(), "last_error": None, "uidvalidity": state.validity,
                                      "failing_since": None, "consecutive_failures": 0}
            if result.full_resync and result.fetched == 0:
                values["last_uid"] = 0  # the folder is empty under its new UIDVALIDITY
            session.execute(update(Mailbox).where(Mailbox.id == mailbox_id).values(**values))
            session.commit()
    except (MailProviderError, PlatformError) as exc:
        session.rollback()
        # The provider's text may echo the credential (some servers do); the secret is
        # registered with the redactor, and the error we store and raise is the masked text.
        message = record_failure(session, mailbox_id, exc)
        if message == str(exc):
            raise
        raise type(exc)(message) from None
    log.info("mailbox %s synced: fetched %s, stored %s, full_resync %s", mailbox_id, result.fetched,
             result.stored, result.full_resync)
    return result


def record_failure(session: Session, mailbox_id: int, exc: BaseException) -> str:
    """Store the (masked) error on the mailbox and extend its failure streak; return the
    stored text. The streak is exported per mailbox and alerted on, so one broken mailbox
    is visible on its own and never hides behind the agency's sync."""
    message = get_redactor().text(str(exc))[:2000]
    session.execute(update(Mailbox).where(Mailbox.id == mailbox_id).values(
        last_error=message, last_failed_at=func.now(),
        failing_since=func.coalesce(Mailbox.failing_since, func.now()),
        consecutive_failures=Mailbox.consecutive_failures + 1))
    session.commit()
    return message


def sync_agency(session: Session, *, providers: ProviderLookup = get_provider,
                batch_size: int = DEFAULT_BATCH_SIZE) -> list[SyncResult]:
    """Sync every connected mailbox of the agency (tenant) database.

    A failing mailbox fails alone: its error and failure streak are recorded on its row
    (exported as ``jobs_casemgmt_mailbox_sync_failing``, alerted on by MailboxSyncFailing)
    and it appears in the results with status ``failed``; the other mailboxes are synced
    and the run succeeds, so EMAIL_MATCHING (chained on success) matches what was synced.
    A mailbox with an expired password would otherwise fail every agency sync and starve
    the matching of every other mailbox."""
    ids = list(session.scalars(select(Mailbox.id).where(Mailbox.status == "connected").order_by(Mailbox.id)))
    session.commit()
    results: list[SyncResult] = []
    for mailbox_id in ids:
        try:
            results.append(sync_mailbox(session, mailbox_id, providers=providers, batch_size=batch_size))
        except Exception as exc:
            if not isinstance(exc, PlatformError):
                # Not a provider failure (a malformed message, a bug): still this mailbox's
                # alone. If even recording it fails, the database is the problem: the run fails.
                session.rollback()
                record_failure(session, mailbox_id, exc)
            reason = get_redactor().text(f"{type(exc).__name__}: {exc}")[:500]
            results.append(SyncResult(mailbox_id, "failed", reason=reason))
            log.warning("mailbox %s failed to sync (the others go on): %s", mailbox_id, reason)
    return results


def sync_admin(session: Session, admin_id: int, *, providers: ProviderLookup = get_provider,
               batch_size: int = DEFAULT_BATCH_SIZE) -> SyncResult:
    """Sync one admin's mailbox (skipped cleanly when it is disconnected or absent)."""
    if session.get(Admin, admin_id) is None:
        raise MailboxNotFound(f"admin {admin_id} does not exist in this agency")
    mailbox_id = session.scalar(select(Mailbox.id).where(Mailbox.admin_id == admin_id))
    if mailbox_id is None:
        return SyncResult(0, "skipped", reason="no mailbox")
    return sync_mailbox(session, mailbox_id, providers=providers, batch_size=batch_size)
