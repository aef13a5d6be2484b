"""How the platform is put together (see :mod:`jobplatform`)."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

import dramatiq
from dramatiq import Middleware
from dramatiq.middleware import Callbacks, CurrentMessage, Pipelines, TimeLimit
from sqlalchemy import Engine

from jobcore.broker import PlatformRedisBroker
from jobcore.db import control_engine, libpq_dsn
from jobcore.fastscript import Replication
from jobcore.keys import Keys
from jobcore.pg import install as install_pg_wait
from jobcore.redaction import get_redactor
from jobcore.redis_client import make_client, redis_target
from jobcore.settings import Settings, get_settings
from ledger.buffered import RedisStreamLedger
from ledger.reconcile import ReconcileReport, reconcile
from ledger.recorder import Limits, Recorder
from ledger.revocation import RevokeResult, revoke
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
from periodic.dispatch import declare_dispatchers
from periodic.middleware import PeriodicMiddleware


@dataclass
class Platform:
    """The built platform of this process, and the operator actions on it (the CLI and
    the console call these, so both record the same things)."""

    settings: Settings
    broker: PlatformRedisBroker
    ledger: RedisStreamLedger
    keys: Keys

    def control(self) -> Engine:
        """This process's control-database engine."""
        return control_engine(self.settings)

    def revoke(self, message_id: str, *, operator: str | None = None) -> RevokeResult:
        return revoke(message_id, ledger=self.ledger, client=self.broker.client, keys=self.keys,
                      control=self.control(), operator=operator or default_operator(),
                      sync_timeout_s=self.settings.ledger_sync_timeout_s)

    def reconcile(self, *, grace_s: float) -> ReconcileReport:
        return reconcile(self.broker, self.ledger, self.control(), self.keys, grace_s=grace_s,
                         sync_timeout_s=self.settings.ledger_sync_timeout_s)

    def sync(self) -> None:
        """Bring the ledger tables up to date with everything sent so far."""
        self.ledger.sync(self.settings.ledger_sync_timeout_s)


def default_operator() -> str:
    """Who is acting, when the caller does not say: the login user."""
    try:
        return os.environ.get("JOBCTL_OPERATOR") or getpass.getuser()
    except Exception:
        return f"uid:{os.getuid()}"


def middleware_stack(s: Settings, ledger: RedisStreamLedger) -> list[Middleware]:
    """The full middleware stack, in order.

    dramatiq calls ``before_*`` hooks in list order and ``after_*`` hooks in reverse, so:
    validation, context and expiry run before the ledger marks a run STARTED (an expired or
    rejected run is never STARTED); the retry policy sits after the ledger and error
    events, so its ``after_process_message`` decides "retry or final" before they record
    it; heartbeat and start-up checks have no ordering needs.
    """
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
        Ledger(ledger),
        ErrorEvents(),
        RetryPolicy(max_retries=s.max_retries, min_backoff=s.min_backoff_ms, max_backoff=s.max_backoff_ms),
        WorkerHealth(heartbeat_interval_ms=s.heartbeat_interval_ms, sweep_interval_ms=s.sweep_interval_ms,
                     stuck_fetch_grace_ms=s.stuck_fetch_grace_ms),
        Reconciliation(ledger, lambda: control_engine(s), interval_ms=s.reconcile_interval_ms,
                       grace_ms=s.reconcile_grace_ms),
    ]


def build_ledger(s: Settings, keys: Keys) -> RedisStreamLedger:
    """The ledger strategy (its own Redis client: the drainer blocks on the stream)."""
    recorder = Recorder(get_redactor, Limits(result_bytes=s.max_result_bytes, progress_bytes=s.max_progress_bytes))
    return RedisStreamLedger(
        make_client(s), keys, dsn=libpq_dsn(s.database_url), control=lambda: control_engine(s), recorder=recorder,
        flush_ms=s.ledger_flush_ms, chunk=s.ledger_drain_chunk, lease_ms=s.ledger_lease_ms,
        backpressure_events=s.ledger_backpressure_events, dedupe_window_s=s.ledger_dedupe_window_s,
        statement_timeout_ms=s.pg_statement_timeout_ms, pg_options=s.pg_startup_options,
        start_wait_s=s.redis_failover_wait_s)


def replication(s: Settings) -> Replication:
    """How many replicas confirm each send and each ack/nack (REDIS_WAIT_REPLICAS)."""
    return Replication(s.redis_wait_replicas, s.redis_wait_timeout_ms)


def build(settings: Settings | None = None) -> Platform:
    """Build the platform and make its broker dramatiq's broker, then declare the actors."""
    s = settings or get_settings()
    install_pg_wait()
    keys = Keys(s.redis_namespace)
    ledger = build_ledger(s, keys)
    broker = PlatformRedisBroker(url=redis_target(s), ledger=ledger, client=make_client(s),
                                 namespace=s.redis_namespace, heartbeat_timeout=s.heartbeat_timeout_ms,
                                 max_message_bytes=s.max_message_bytes, replication=replication(s),
                                 hostname=s.worker_hostname, middleware=middleware_stack(s, ledger))
    dramatiq.set_broker(broker)
    # Importing the actor modules declares their actors on the broker just set.
    import actors.casemgmt.jobs  # noqa: F401
    import actors.escrow.jobs  # noqa: F401
    import actors.examples  # noqa: F401

    declare_dispatchers(broker)
    return Platform(s, broker, ledger, keys)
