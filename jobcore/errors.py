"""The platform's one error hierarchy.

Everything the platform raises on purpose derives from :class:`PlatformError`.
Errors that must abort ``send()`` also derive from dramatiq's ``MiddlewareError``,
because dramatiq swallows (and only logs) any other exception raised by middleware
while enqueueing.
"""

from __future__ import annotations

from dramatiq.middleware import MiddlewareError, SkipMessage


class PlatformError(Exception):
    """Base class of every error the platform raises deliberately."""


class ConfigurationError(PlatformError):
    """A setting is missing or malformed."""


class ServiceUnavailable(PlatformError):
    """Redis, PostgreSQL or another dependency cannot be reached."""


class EnqueueError(PlatformError, MiddlewareError):
    """A message was refused at ``send()``; nothing was enqueued or recorded."""


class UnknownActor(EnqueueError):
    """The message names an actor that is not declared on this broker."""


class InvalidArguments(EnqueueError):
    """The arguments do not fit the actor's signature."""


class UnserializableArguments(EnqueueError):
    """The arguments cannot be encoded into a message."""


class MessageTooLarge(EnqueueError):
    """The encoded message is larger than ``MAX_MESSAGE_BYTES``."""


class InvalidMessage(PlatformError):
    """A payload fetched from a queue is not a message envelope the worker can process
    (:mod:`jobcore.envelope`); it is dead-lettered and recorded as rejected."""


class LedgerError(PlatformError):
    """The ledger could not record a transition."""


class RunNotFound(LedgerError):
    """No JobRun has the given id or message id."""


class TenantError(PlatformError):
    """A tenant is unknown, inactive, or its database cannot be used."""


class ExternalServiceError(PlatformError):
    """A call to an external system (SMTP, IMAP, bank, S3, HTTP API) failed."""


class InsecureTransport(ExternalServiceError):
    """Credentials would travel over an unencrypted or unverified connection; refused
    before they are sent (an explicit per-setting or per-mailbox override allows it)."""


class OutcomeUnknown(ExternalServiceError):
    """A side-effecting call may or may not have taken effect (time-out, lost reply);
    it must be reconciled, never blindly repeated."""


# Skip reasons. The worker treats these as SkipMessage (no retry); the ledger reads
# the concrete type to pick the run's resolution.
class Expired(SkipMessage):
    """The message waited in the queue past its max age."""


class Revoked(SkipMessage):
    """The run was revoked before it started."""


class Rejected(SkipMessage):
    """The message can never run (e.g. its arguments do not fit the actor)."""


class AlreadyFinished(SkipMessage):
    """A duplicate delivery of a run the ledger already finished."""


class NotHeld(SkipMessage):
    """This worker no longer holds the delivery: while it was cut off from Redis the
    sweeper gave the message back to its queue (another worker runs it), or a failover
    lost the fetch. It is dropped here without touching Redis."""


class JobRevoked(BaseException):  # noqa: N818 - mirrors dramatiq's Interrupt naming
    """Raised inside a running job that was revoked. A BaseException, like dramatiq's
    interrupts, so that ``except Exception`` in job code does not swallow it."""
