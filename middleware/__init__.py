"""Dramatiq middleware, one concern per module, and the platform's ordered stack."""

from __future__ import annotations

from dramatiq import Middleware
from dramatiq.middleware import Callbacks, CurrentMessage, Pipelines, TimeLimit

from jobcore.settings import Settings, get_settings


def default_stack(settings: Settings | None = None) -> list[Middleware]:
    """The full middleware stack, in order.

    dramatiq calls ``before_*`` hooks in list order and ``after_*`` hooks in reverse, so:
    validation, context and expiry run before the ledger marks a run STARTED (an expired or
    rejected run is never STARTED); the retry policy sits after the ledger and error
    events, so its ``after_process_message`` decides "retry or final" before they record
    it; heartbeat and start-up checks have no ordering needs.
    """
    from middleware.error_events import ErrorEvents
    from middleware.expiry import Expiry
    from middleware.job_context import JobContextMiddleware
    from middleware.ledger import Ledger
    from middleware.log_redaction import LogRedaction
    from middleware.reconciliation import Reconciliation
    from middleware.retries import RetryPolicy
    from middleware.revocation import Revocation
    from middleware.startup import StartupChecks
    from middleware.validation import Validation
    from middleware.worker_health import WorkerHealth
    from periodic.middleware import PeriodicMiddleware

    s = settings or get_settings()
    return [
        StartupChecks(),
        LogRedaction(),
        Validation(),
        JobContextMiddleware(),
        Expiry(max_age=s.max_age_ms or None),
        PeriodicMiddleware(),
        Revocation(poll_ms=s.revoke_poll_ms),
        TimeLimit(time_limit=s.time_limit_ms),
        CurrentMessage(),
        Callbacks(),
        Pipelines(),
        Ledger(),
        ErrorEvents(),
        RetryPolicy(max_retries=s.max_retries, min_backoff=s.min_backoff_ms, max_backoff=s.max_backoff_ms),
        WorkerHealth(heartbeat_interval_ms=s.heartbeat_interval_ms, sweep_interval_ms=s.sweep_interval_ms,
                     stuck_fetch_grace_ms=s.stuck_fetch_grace_ms),
        Reconciliation(interval_ms=s.reconcile_interval_ms, grace_ms=s.reconcile_grace_ms),
    ]
