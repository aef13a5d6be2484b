"""A worker plug-in for the planted-secret test: an IMAP provider whose login errors echo
the password, as some real servers do ("LOGIN user pass: invalid credentials").

Loaded by the worker (``dramatiq actors tests.support.casemgmt_leaky_provider``), it
replaces the ``imap`` provider so the secret reaches exception texts; the platform must
still keep it out of every output.
"""

from __future__ import annotations

from actors.casemgmt.errors import MailProviderError
from actors.casemgmt.imap_provider import ImapProvider
from actors.casemgmt.providers import MailboxAccount, MailConnection, register_provider


class LeakyImapProvider(ImapProvider):
    """Real IMAP; a failed login raises an error that contains the password."""

    def connect(self, account: MailboxAccount, secret: str) -> MailConnection:
        try:
            return super().connect(account, secret)
        except MailProviderError as exc:
            raise MailProviderError(f"{exc} (LOGIN {account.username} {secret})") from None


register_provider("imap", LeakyImapProvider)
