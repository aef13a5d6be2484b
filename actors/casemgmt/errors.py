"""Errors of the case-management jobs."""

from __future__ import annotations

from jobcore.errors import ConfigurationError, ExternalServiceError, PlatformError


class CaseManagementError(PlatformError):
    """Base of the case-management errors."""


class CredentialError(CaseManagementError):
    """A mailbox credential cannot be decrypted (wrong or rotated-out key)."""


class CredentialKeyMissing(ConfigurationError):
    """CASEMGMT_CREDENTIAL_KEYS is not set."""


class MailProviderError(ExternalServiceError):
    """The mail provider (IMAP server, Gmail, Graph) failed or refused us."""
