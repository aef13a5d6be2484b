"""Mailbox credentials at rest.

How credentials are stored: the IMAP password or OAuth token of a mailbox is encrypted
with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) and only the ciphertext is
kept, in ``mailboxes.credential_ciphertext``. The keys come from the environment variable
``CASEMGMT_CREDENTIAL_KEYS`` (comma-separated Fernet keys, newest first: the first
encrypts, all decrypt, so keys rotate without downtime); they never live in a database.
A stolen database dump therefore holds no usable credential. Disconnecting a mailbox sets
the ciphertext to NULL.

Whenever a credential is decrypted it is registered with the process redactor, so the
plaintext is masked in every log line, ledger row, error event and metric label that
passes through the platform's redaction.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from actors.casemgmt.errors import CredentialError, CredentialKeyMissing
from jobcore.redaction import get_redactor
from jobcore.settings import get_settings

ENV = "CASEMGMT_CREDENTIAL_KEYS"


def _cipher() -> MultiFernet:
    # From the typed settings (read once per process): a key rotation needs a worker restart.
    keys = list(get_settings().casemgmt_credential_keys)
    if not keys:
        raise CredentialKeyMissing(f"{ENV} is not set: mailbox credentials cannot be encrypted or read")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError):
        raise CredentialKeyMissing(f"{ENV} holds a key that is not a Fernet key") from None


def generate_key() -> str:
    """A new Fernet key (for provisioning ``CASEMGMT_CREDENTIAL_KEYS``)."""
    return Fernet.generate_key().decode()


def encrypt_credential(secret: str) -> bytes:
    """Ciphertext of a mailbox password or token, for ``mailboxes.credential_ciphertext``."""
    get_redactor().add_secret(secret)
    return _cipher().encrypt(secret.encode())


def decrypt_credential(ciphertext: bytes) -> str:
    """The plaintext credential, registered with the redactor before it is returned."""
    try:
        secret = _cipher().decrypt(bytes(ciphertext)).decode()
    except InvalidToken:
        raise CredentialError("mailbox credential cannot be decrypted with the configured keys") from None
    get_redactor().add_secret(secret)
    return secret
