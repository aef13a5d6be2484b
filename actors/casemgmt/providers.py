"""The mail provider interface.

A provider opens a connection to one mailbox and streams its messages after a cursor, in
batches. IMAP's cursor is (UIDVALIDITY, last UID); providers without UIDs fit the same
shape: Gmail's history id or Microsoft Graph's delta link go in ``FolderState.opaque``
(stored in ``mailboxes.sync_cursor``) with a constant ``validity``, and a provider that
invalidates its cursor (Gmail's expired history id, Graph's ``syncStateNotFound``)
reports a new ``validity``, which triggers the same full resync as an IMAP UIDVALIDITY
change. Only ``imap`` is implemented; ``gmail`` and ``msgraph`` are reserved names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

from actors.casemgmt.errors import MailProviderError


@dataclass(frozen=True)
class MailboxAccount:
    """Where and how to log in (the secret is passed separately, never stored here)."""

    mailbox_id: int
    provider: str
    host: str | None
    port: int | None
    use_ssl: bool
    username: str
    folder: str = "INBOX"
    # Without use_ssl: upgrade with STARTTLS; log in over plain text only when allowed.
    starttls: bool = False
    allow_plaintext_auth: bool = False


@dataclass(frozen=True)
class FolderState:
    """The provider's cursor validity (IMAP UIDVALIDITY) and an optional opaque cursor."""

    validity: int
    opaque: str | None = None


@dataclass
class FetchedMessage:
    """One message, parsed to what the agency database stores."""

    uid: int
    message_id: str
    thread_id: str
    in_reply_to: str | None
    subject: str
    from_address: str | None
    to_addresses: list[str] = field(default_factory=list)
    cc_addresses: list[str] = field(default_factory=list)
    sent_at: datetime | None = None
    size_bytes: int | None = None
    body_preview: str | None = None


class MailConnection(ABC):
    """An open, logged-in mailbox connection."""

    @abstractmethod
    def folder_state(self) -> FolderState:
        """Select the folder and return its cursor validity."""

    @abstractmethod
    def fetch_after(self, last_uid: int, batch_size: int) -> Iterator[list[FetchedMessage]]:
        """Messages with UID > ``last_uid``, in ascending UID order, ``batch_size`` at a time."""

    @abstractmethod
    def close(self) -> None:
        """Log out (never raises)."""

    def __enter__(self) -> MailConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class MailProvider(ABC):
    """Opens connections for one provider kind."""

    name: str

    @abstractmethod
    def connect(self, account: MailboxAccount, secret: str) -> MailConnection:
        """Log in; raise :class:`MailProviderError` (without the secret) on failure."""


ProviderFactory = Callable[[], MailProvider]
_registry: dict[str, ProviderFactory] = {}


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make a provider available under ``mailboxes.provider = name``."""
    _registry[name] = factory


def get_provider(name: str) -> MailProvider:
    """The provider for a mailbox's ``provider`` column."""
    if name not in _registry:
        raise MailProviderError(f"mail provider {name!r} is not implemented")
    return _registry[name]()
