"""IMAP provider (RFC 3501) on the standard library's :mod:`imaplib`.

Memory stays bounded by the batch: UIDs above the cursor are listed with one
``UID SEARCH`` (a few bytes per message), then fetched ``batch_size`` at a time, and only
headers plus the first ``PREVIEW_BYTES`` of the body are transferred, so a mailbox with
large attachments costs no more than one with plain text.
"""

from __future__ import annotations

import hashlib
import imaplib
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from actors.casemgmt.errors import MailProviderError
from actors.casemgmt.providers import (
    FetchedMessage,
    FolderState,
    MailboxAccount,
    MailConnection,
    MailProvider,
    register_provider,
)
from jobcore.settings import get_settings
from jobcore.tls import client_context

PREVIEW_BYTES = 2048
HEADER_FIELDS = "MESSAGE-ID IN-REPLY-TO REFERENCES SUBJECT FROM TO CC DATE"
FETCH_ITEMS = f"(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})] BODY.PEEK[TEXT]<0.{PREVIEW_BYTES}>)"
_UID_RE = re.compile(rb"UID (\d+)")
_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
_START_RE = re.compile(rb"^\d+ \(")
_MSGID_RE = re.compile(r"<[^<>\s]+>")


def _ids(value: str | None) -> list[str]:
    return _MSGID_RE.findall(value or "")


def _text(value: Any) -> str:
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # malformed encoded-words: keep the raw header
        return str(value)


def _addresses(*values: Any) -> list[str]:
    pairs = getaddresses([str(v) for v in values if v])
    return sorted({addr.strip().lower() for _, addr in pairs if "@" in addr})


def parse_message(uid: int, header_bytes: bytes, body_bytes: bytes, size: int | None) -> FetchedMessage:
    """Turn fetched header fields and a body prefix into a :class:`FetchedMessage`."""
    headers = BytesHeaderParser().parsebytes(header_bytes)
    own = _ids(headers.get("Message-ID"))
    # Messages without a Message-ID get a stable synthetic one from their headers, so a
    # UIDVALIDITY resync still recognises them.
    message_id = own[0] if own else f"<sha256:{hashlib.sha256(header_bytes).hexdigest()}@synthetic>"
    replies = _ids(headers.get("In-Reply-To"))
    in_reply_to = replies[0] if replies else None
    references = _ids(headers.get("References"))
    thread_id = references[0] if references else (in_reply_to or message_id)
    sent_at = None
    if headers.get("Date"):
        try:
            sent_at = parsedate_to_datetime(str(headers["Date"]))
            if sent_at.tzinfo is None:
                sent_at = None  # a date without zone cannot be placed in time
        except (TypeError, ValueError):
            sent_at = None
    from_list = _addresses(headers.get("From"))
    preview = body_bytes.decode("utf-8", errors="replace").replace("\x00", "")
    return FetchedMessage(
        uid=uid, message_id=message_id[:998], thread_id=thread_id[:998], in_reply_to=in_reply_to,
        subject=_text(headers.get("Subject")).replace("\x00", "")[:10000],
        from_address=from_list[0] if from_list else None,
        to_addresses=_addresses(*headers.get_all("To", [])), cc_addresses=_addresses(*headers.get_all("Cc", [])),
        sent_at=sent_at, size_bytes=size, body_preview=preview,
    )


def _group_fetch_response(data: list[Any]) -> Iterator[tuple[bytes, list[bytes]]]:
    """imaplib's FETCH data -> (metadata bytes, [literals]) per message."""
    meta = b""
    literals: list[bytes] = []
    for part in data:
        if isinstance(part, tuple):
            head, literal = part
            if _START_RE.match(head) and (meta or literals):
                yield meta, literals
                meta, literals = b"", []
            meta += head
            literals.append(literal)
        elif isinstance(part, bytes):
            if _START_RE.match(part) and (meta or literals):  # a message without literals
                yield meta, literals
                meta, literals = b"", []
            meta += part
    if meta or literals:
        yield meta, literals


class ImapConnection(MailConnection):
    """A logged-in IMAP connection with the folder selected read-only."""

    def __init__(self, conn: imaplib.IMAP4, folder: str) -> None:
        self.conn = conn
        self.folder = folder

    def _check(self, typ: str, data: Any, what: str) -> Any:
        if typ != "OK":
            raise MailProviderError(f"IMAP {what} failed: {data!r}"[:500])
        return data

    def folder_state(self) -> FolderState:
        try:
            self._check(*self.conn.select(self.folder, readonly=True), what=f"SELECT {self.folder}")
            _, data = self.conn.response("UIDVALIDITY")
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailProviderError(f"IMAP SELECT failed: {exc}") from None
        if not data or data[0] is None:
            raise MailProviderError("IMAP server did not report UIDVALIDITY")
        return FolderState(validity=int(data[0]))

    def fetch_after(self, last_uid: int, batch_size: int) -> Iterator[list[FetchedMessage]]:
        try:
            data = self._check(*self.conn.uid("SEARCH", f"UID {last_uid + 1}:*"), what="UID SEARCH")
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailProviderError(f"IMAP UID SEARCH failed: {exc}") from None
        # "n:*" also matches the highest UID when it is below n: filter client-side.
        uids = sorted(u for u in (int(x) for x in b" ".join(d for d in data if d).split()) if u > last_uid)
        for start in range(0, len(uids), batch_size):
            chunk = uids[start:start + batch_size]
            try:
                resp = self._check(*self.conn.uid("FETCH", ",".join(map(str, chunk)), FETCH_ITEMS),
                                   what="UID FETCH")
            except (imaplib.IMAP4.error, OSError) as exc:
                raise MailProviderError(f"IMAP UID FETCH failed: {exc}") from None
            batch = []
            for meta, literals in _group_fetch_response(resp):
                uid_m = _UID_RE.search(meta)
                if uid_m is None:
                    continue  # an unsolicited FETCH (flag change) without UID
                size_m = _SIZE_RE.search(meta)
                header = literals[0] if literals else b""
                body = literals[1] if len(literals) > 1 else b""
                batch.append(parse_message(int(uid_m.group(1)), header, body,
                                           int(size_m.group(1)) if size_m else None))
            batch.sort(key=lambda m: m.uid)
            yield batch

    def close(self) -> None:
        try:
            self.conn.logout()
        except Exception:  # already gone: nothing to clean up
            pass


class ImapProvider(MailProvider):
    """Connects with IMAP4_SSL (``use_ssl``), IMAP4 + STARTTLS (``starttls``) or, only when
    the mailbox allows plain-text LOGIN, IMAP4 in clear. Certificates and host names are
    verified (``jobcore.tls``), against IMAP_CA_FILE when set."""

    name = "imap"
    timeout = 30.0

    def connect(self, account: MailboxAccount, secret: str) -> MailConnection:
        if not account.host:
            raise MailProviderError(f"mailbox {account.mailbox_id} has no IMAP host")
        port = account.port or (993 if account.use_ssl else 143)
        encrypted = account.use_ssl or account.starttls
        if not encrypted and not account.allow_plaintext_auth:
            # Refused before connecting: the password is never sent in clear by default.
            raise MailProviderError(f"mailbox {account.mailbox_id}: IMAP LOGIN to {account.host}:{port} over an "
                                    "unencrypted connection refused (set use_ssl or starttls, or "
                                    "allow_plaintext_auth for this mailbox)")
        context = client_context(get_settings().imap_ca_file) if encrypted else None
        try:
            if account.use_ssl:
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(account.host, port, ssl_context=context,
                                                        timeout=self.timeout)
            else:
                conn = imaplib.IMAP4(account.host, port, timeout=self.timeout)
                if account.starttls:
                    try:
                        conn.starttls(ssl_context=context)
                    except BaseException:
                        try:
                            conn.shutdown()
                        except OSError:  # a failed handshake may have closed the socket already
                            pass
                        raise
        except (TimeoutError, OSError, imaplib.IMAP4.error) as exc:
            raise MailProviderError(f"IMAP connect to {account.host}:{port} failed: {exc}") from None
        try:
            conn.login(account.username, secret)
        except (imaplib.IMAP4.error, OSError) as exc:
            try:
                conn.shutdown()
            except Exception:
                pass
            # The server's text, never our arguments (imaplib does not echo the password).
            raise MailProviderError(f"IMAP login as {account.username} failed: {exc}") from None
        return ImapConnection(conn, account.folder)


register_provider("imap", ImapProvider)
