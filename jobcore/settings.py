"""One typed settings object, read from the environment once per process."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from jobcore.errors import ConfigurationError

# Secret key words (jobcore.redaction: matched as words of a key, see docs/security.md).
DEFAULT_REDACT_KEYS = (
    "password",
    "passwd",
    "passphrase",
    "pass",
    "pwd",
    "token",
    "secret",
    "api_key",
    "apikey",
    "auth",
    "authorization",
    "cookie",
    "session",
    "sessionid",
    "dsn",
    "account_number",
    "routing_number",
    "ssn",
    "credential",
    "private_key",
)


def _env_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _env_tuple(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of the platform. Field name upper-cased is the environment variable."""

    # redis://[user:password@]host:port/db, or rediss:// for TLS (jobcore/redis_client.py).
    # With REDIS_SENTINELS set, host and port are ignored: the primary comes from the
    # sentinels, and the URL's scheme, credentials and db are used to connect to it.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # --- Redis connection (docs/scaling.md, "Redis high availability") ------------------
    # host:port of each sentinel; empty = connect to REDIS_URL's host directly.
    redis_sentinels: tuple[str, ...] = ()
    # The primary's name in the sentinels' configuration (``sentinel monitor <name> ...``).
    redis_sentinel_service: str = ""
    # Credentials of the sentinels themselves (their own ``requirepass``/ACL user), if any.
    redis_sentinel_username: str = ""
    redis_sentinel_password: str = field(default="", repr=False)
    # TLS (rediss://): certificates are always verified (hostname included), against this
    # CA file when set, else the system's CAs. Client certificate and key for servers
    # with ``tls-auth-clients yes`` (Redis's default).
    redis_ca_file: str = ""
    redis_tls_cert_file: str = ""
    redis_tls_key_file: str = field(default="", repr=False)
    # Bounds on every Redis connection: connect, and each reply (blocking reads use less).
    redis_connect_timeout_s: float = 5.0
    redis_socket_timeout_s: float = 30.0
    # Pooled-client commands are retried this many times on a connection error, with
    # jittered back-off (10 ms doubling to 1 s): a failover's first second is absorbed.
    # The platform's scripts (send, fetch, start, ack) are never retried blind.
    redis_retries: int = 3
    # Durability against failover (docs/scaling.md): with N > 0, every send and every
    # ack/nack is followed by ``WAIT N REDIS_WAIT_TIMEOUT_MS`` on its connection, so it is
    # on N replicas before it counts; a send() that N replicas did not confirm in time
    # raises ServiceUnavailable (sending the same message again is deduplicated), an ack
    # is logged and counted. A write is safe only if N covers every replica the sentinels
    # may promote (N = the number of replicas). 0 (default): asynchronous replication, a
    # failover can lose the last writes (sends vanish, acked jobs run again).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 500
    # A worker thread about to start a job waits this long for Redis to come back (a
    # failover takes seconds) before it fails the delivery instead of running it unchecked.
    redis_failover_wait_s: float = 60.0
    # This process's host name in worker ids (broker id, job_runs.worker_id); default:
    # the machine's host name. Set it where containers share a host name.
    worker_hostname: str = ""
    # The control database: the ledger, ticks, the tenant registry.
    database_url: str = "postgresql+psycopg2://root@127.0.0.1:5432/jobplatform"
    # Prefix of every Redis key the broker and the platform write; lets tests and
    # several deployments share one Redis.
    redis_namespace: str = "dramatiq"
    # PostHog project key for `$exception` events (empty: none sent). Secrets are kept
    # out of repr(), so a logged Settings object leaks nothing.
    posthog_api_key: str = field(default="", repr=False)
    # Where PostHog `$exception` events are sent (events only with POSTHOG_API_KEY set).
    posthog_host: str = "https://us.i.posthog.com"
    # Seconds the PostHog client waits per HTTP request; events are sent from a
    # background thread so a slow PostHog never blocks a job.
    posthog_timeout: float = 3.0
    # The seed's DEV_ENV rule: "1" means a developer machine, where production
    # schedules stay off unless SCHEDULES_ENABLED=1.
    dev_env: bool = False
    # Run production schedules even with DEV_ENV=1.
    schedules_enabled: bool = False
    # Retry policy defaults (seed: up to 2 retries, 2 s initial, capped at 8 s).
    max_retries: int = 2
    # First retry delay (doubled per retry, 10% jitter).
    min_backoff_ms: int = 2000
    # Longest retry delay.
    max_backoff_ms: int = 8000
    # Default age limit for a queued message before it is EXPIRED (0 = none).
    max_age_ms: int = 3_600_000
    # Default time limit of one attempt.
    time_limit_ms: int = 600_000
    # A worker that has not heartbeated for this long is dead; its messages are
    # redelivered by the orphan sweeper. Workers heartbeat from a dedicated thread,
    # so a busy worker is never mistaken for a dead one.
    heartbeat_timeout_ms: int = 30_000
    # How often a worker heartbeats (at most half of HEARTBEAT_TIMEOUT_MS).
    heartbeat_interval_ms: int = 5_000
    # How often each worker returns dead workers' messages to their queues.
    sweep_interval_ms: int = 10_000
    # Ledger–broker reconciliation: runs whose message is gone from Redis are re-enqueued.
    reconcile_interval_ms: int = 60_000
    # A run must be idle this long before reconciliation looks at it.
    reconcile_grace_ms: int = 30_000
    # A message in a live worker's ack set that the worker does not hold (a lost fetch
    # reply) is requeued once it has been seen unheld this long.
    stuck_fetch_grace_ms: int = 15_000
    # Retention of finished runs.
    retention_days: int = 30
    # How often the revocation watcher looks for revoked running messages.
    revoke_poll_ms: int = 500
    # Key words whose values are masked in arguments, errors, logs and events (matched as words of a key).
    redact_keys: tuple[str, ...] = field(default=DEFAULT_REDACT_KEYS)
    # --- the ledger (docs/ledger.md) ---------------------------------------------------
    # Connections of each process's control-database pool (CLI, revocation, reconciliation).
    control_pool_size: int = 4
    # Every transition is written to Redis with the broker operation it belongs to and
    # drained to PostgreSQL by one process per namespace: at most this long after the
    # first event of a batch (the ledger trails Redis by about this much).
    ledger_flush_ms: int = 50
    # Events per drain transaction at most.
    ledger_drain_chunk: int = 2000
    # Lease of the draining process; another takes over this long after it dies.
    ledger_lease_ms: int = 5000
    # Workers stop taking messages while the buffer holds more events than this
    # (PostgreSQL down for long): a bounded Redis instead of an unbounded one.
    ledger_backpressure_events: int = 1_000_000
    # A copy of a run that finished less than this long ago is refused without asking
    # PostgreSQL (older copies are checked against PostgreSQL when Redis no longer knows them).
    ledger_dedupe_window_s: int = 900
    # How long revocation, reconciliation and the CLI wait for the ledger to catch up.
    ledger_sync_timeout_s: float = 30.0
    # --- limits ---------------------------------------------------------------------
    # Encoded size of one message at most; larger ones are refused at send().
    max_message_bytes: int = 256 * 1024
    # Results and progress larger than this are stored truncated, with a marker.
    max_result_bytes: int = 64 * 1024
    # Progress reports larger than this are stored truncated, with a marker.
    max_progress_bytes: int = 8 * 1024
    # --- PostgreSQL timeouts (jobcore/pg.py) ------------------------------------------
    # Connect timeout of every PostgreSQL connection.
    pg_connect_timeout_s: int = 5
    # Control database (ledger drain, revocation, reconciliation, ticks, CLI).
    pg_statement_timeout_ms: int = 30_000
    # Tenant databases (domain jobs).
    tenant_statement_timeout_ms: int = 300_000
    # Send the timeouts as connection options; set to 0 behind PgBouncer (which refuses
    # startup options: set them on the databases there, docs/scaling.md "PgBouncer";
    # tenant databases created by the platform get them with ALTER DATABASE).
    pg_startup_options: bool = True
    # host:port of the PostgreSQL server itself when DATABASE_URL and the tenant URLs go
    # through PgBouncer in transaction pooling mode. What needs a server session of its
    # own connects there directly (same database, user and password): Alembic
    # migrations, CREATE DATABASE, and the Huntington batch lock (a session-level
    # advisory lock held across transactions). Empty: every connection uses its URL.
    pg_direct_address: str = ""
    # --- tenancy -------------------------------------------------------------------
    # Per worker process: at most this many tenant engines stay open (LRU, disposed on
    # eviction), each with at most TENANT_POOL_SIZE connections.
    tenant_engine_cache_size: int = 8
    # Connections per cached tenant engine (no overflow).
    tenant_pool_size: int = 2
    # Whole-deployment budget of tenant connections that the settings above must fit in.
    tenant_connection_budget: int = 64
    # "lru": pooled engines, at most TENANT_ENGINE_CACHE_SIZE per process (evicted ones are
    # disposed). "nullpool": no pooling in the process, for a PgBouncer in front of the
    # tenant databases (it does the pooling across all processes).
    tenant_pool_mode: str = "lru"
    # --- scheduling ----------------------------------------------------------------
    # The schedules this scheduler runs (and the exporter watches), comma-separated names
    # (empty: all); for staged roll-outs, tests and the demo.
    schedules_only: tuple[str, ...] = ()
    # Cadence of EMAIL_SYNC_PERIODIC, in minutes.
    email_sync_interval_min: int = 15
    # A tick CLAIMED this long ago and still not sent (its scheduler died between the
    # claim and the send) is re-sent by any live scheduler, and exported as unsent.
    scheduler_claim_stale_s: float = 60.0
    # Test-only (refused outside DEV_ENV=1): the scheduler's clock starts at this aware
    # ISO-8601 instant and runs on from there, so a test can fire a production daily
    # schedule's tick now (e.g. 05:59:57 America/New_York for dr_auto_approval).
    scheduler_clock_start: str = ""
    # --- outbound e-mail (SMTP) --------------------------------------------------------
    # Outbound mail server.
    smtp_host: str = "127.0.0.1"
    # Its port (25 or 587 for STARTTLS, 465 for SMTPS).
    smtp_port: int = 25
    # SMTP AUTH user (empty: no AUTH).
    smtp_user: str = ""
    # SMTP AUTH password.
    smtp_password: str = field(default="", repr=False)
    # Envelope and From address of platform mail.
    smtp_from: str = "jobs@localhost"
    # Transport security (docs/security.md, "TLS"): "starttls" (upgrade, required: a
    # server that does not offer it is an error), "smtps" (implicit TLS, usually port
    # 465) or "none". Certificates are always verified, against SMTP_CA_FILE when set,
    # else the system's CAs. With "none", SMTP AUTH is refused unless
    # SMTP_ALLOW_PLAINTEXT_AUTH=1 says a password may travel in clear (a local relay).
    smtp_tls: str = "starttls"
    # CA file to verify the SMTP server's certificate (empty: the system CAs).
    smtp_ca_file: str = ""
    # Allow SMTP AUTH without TLS (only with SMTP_TLS=none; never in production).
    smtp_allow_plaintext_auth: bool = False
    # Seconds per SMTP socket operation.
    smtp_timeout: float = 10.0
    # Both products' notification outboxes: a message the SMTP server refused (or lost
    # after connecting) waits this long, doubled per charged attempt (at most 6 h), before
    # it is tried again. An SMTP server that cannot be reached charges no attempt.
    notification_retry_backoff_s: float = 600.0
    # IMAP certificates are verified against this CA file when set (else the system's
    # CAs); whether a mailbox uses TLS is per mailbox (casemgmt.mailboxes).
    imap_ca_file: str = ""
    # --- escrow platform externals -------------------------------------------------
    # https outside DEV_ENV=1 (validate()): the key and the bank's payloads travel here.
    internal_api_url: str = "https://127.0.0.1:8080/internal/status"
    # Key the AWS status check posts to the internal dashboard API with.
    internal_api_key: str = field(default="", repr=False)
    # The platform's S3 bucket the status check probes.
    s3_bucket: str = "seedtrust-status"
    # S3 endpoint (empty: AWS; set for a local S3 such as moto).
    s3_endpoint_url: str = ""
    # AWS region of the S3 client.
    aws_region: str = "us-east-1"
    # CloudFront URL the status check fetches.
    cloudfront_url: str = ""
    # Huntington bank gateway (https:// outside DEV_ENV=1).
    bank_gateway_url: str = "https://127.0.0.1:8099"
    # Seconds per bank socket read.
    bank_timeout: float = 10.0
    # Seconds per socket read of other outbound HTTP calls.
    http_timeout: float = 10.0
    # Overall bound, in seconds, on one outbound HTTP call (connect, send, headers and the
    # whole body); BANK_TIMEOUT / HTTP_TIMEOUT bound each socket read within it.
    http_deadline: float = 30.0
    # boto3 (S3) clients: explicit time-outs and attempts instead of botocore's 60 s + retries.
    aws_connect_timeout: float = 5.0
    # boto3 read timeout, seconds.
    aws_read_timeout: float = 10.0
    # boto3 attempts in all (standard retry mode).
    aws_max_attempts: int = 3
    # --- escrow domain jobs ------------------------------------------------------------
    # A batch run waits this long for the batch lock; if another live run holds it, the
    # run is retried (BatchBusy) after HUNTINGTON_BUSY_RETRY_MS, at most
    # HUNTINGTON_BUSY_MAX_RETRIES times (60 x 60 s: an hour), then ends ERROR.
    huntington_lock_wait_s: float = 10.0
    # Delay before a batch run that found its batch locked is retried.
    huntington_busy_retry_ms: int = 60_000
    # Busy retries allowed before the run ends ERROR.
    huntington_busy_max_retries: int = 60
    # Report requests: attempts charged per request (connection-level failures are not
    # charged); after a charged failure the request waits REPORT_RETRY_BACKOFF_S, doubled
    # per attempt, so its REPORT_MAX_ATTEMPTS attempts span minutes, not one run's retries.
    report_max_attempts: int = 3
    # Back-off of a report request after a charged failure (doubling, capped at 1 h).
    report_retry_backoff_s: float = 180.0
    # DR auto-approval works through every due request in batches of this size, each
    # committed with its outbox rows.
    dr_approval_batch_size: int = 500
    # The exporter counts PENDING requests that were due at a scheduled auto-approval run
    # at least this long ago (jobs_dr_auto_approval_overdue).
    dr_overdue_grace_s: int = 7200
    # --- case management ---------------------------------------------------------------
    # Fernet keys for mailbox credentials at rest, newest first (rotation: prepend a key,
    # restart workers; old ciphertexts still decrypt with the later keys).
    casemgmt_credential_keys: tuple[str, ...] = field(default=(), repr=False)
    # --- observability -------------------------------------------------------------
    # Address the Prometheus exporter listens on.
    exporter_host: str = "127.0.0.1"
    # Its port.
    exporter_port: int = 9300
    # The window of the exporter's *_window metrics and of the console's health signals, seconds.
    exporter_window_s: int = 600
    # Read the tenant databases' domain state at scrape time (0: ledger, ticks and Redis only).
    exporter_domain: bool = True
    # A scheduler silent this long counts as down (SchedulerDown; the console's overview).
    scheduler_heartbeat_timeout_ms: int = 30_000
    # The actors the exporter zero-fills, as `actor:queue,...` (empty: every declared actor).
    exporter_actors: tuple[str, ...] = ()
    # --- operator console (docs/console.md) ---------------------------------------------
    # Address the operator console listens on.
    console_host: str = "127.0.0.1"
    # Its port.
    console_port: int = 9400
    # Request threads of the console.
    console_threads: int = 8
    # Users, comma-separated "name:role:scrypt:..." (role viewer|operator; the hash from
    # `python -m console hash-password`). Tokens: "name:role:sha256:<hex digest
    # of the token>" (`python -m console new-token`). Hashes only: never a password here.
    console_users: tuple[str, ...] = field(default=(), repr=False)
    # API tokens, comma-separated `name:role:sha256:<hex>` (`python -m console new-token`).
    console_tokens: tuple[str, ...] = field(default=(), repr=False)
    # Signs the session cookies; required outside DEV_ENV=1 (at least 32 characters).
    console_secret_key: str = field(default="", repr=False)
    # Lifetime of a console login.
    console_session_hours: float = 12.0
    # Secure flag of the session cookie: set it when the console is served over HTTPS.
    console_secure_cookie: bool = False
    # DEV_ENV=1 only: a request without a login acts with this role ("" = login required).
    console_anonymous_role: str = ""
    # Grafana's role on the control database (docs/security.md): created NOLOGIN by the
    # control migrations with SELECT on the ledger tables and on tenants without
    # database_url; `python -m jobcore.readonly_role` gives it LOGIN with this password.
    ledger_readonly_role: str = "jobs_readonly"
    # Password `python -m jobcore.readonly_role` gives LEDGER_READONLY_ROLE (compose requires it).
    ledger_readonly_password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the ``.env`` file, see
        :func:`env_file`, overlaid by ``os.environ``); bad values raise
        :class:`ConfigurationError` naming the variable."""
        env = process_environment() if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            key = f.name.upper()
            if key not in env:
                continue
            raw = env[key]
            default = f.default
            try:
                if isinstance(default, bool):
                    values[f.name] = _env_bool(raw)
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                elif isinstance(default, tuple):
                    values[f.name] = _env_tuple(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise ConfigurationError(f"{key}: {exc}") from None
        if "SMTP_STARTTLS" in env:
            # Renamed, never silently ignored: an old deployment's "SMTP_STARTTLS=0" meant
            # plain text, which is now a choice to state as SMTP_TLS=none.
            raise ConfigurationError("SMTP_STARTTLS was replaced by SMTP_TLS=starttls|smtps|none")
        if "DEV_ENV" in env and "dev_env" not in values:
            values["dev_env"] = env["DEV_ENV"].strip() == "1"
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.max_retries < 0:
            raise ConfigurationError("MAX_RETRIES must be >= 0")
        if self.min_backoff_ms <= 0 or self.max_backoff_ms < self.min_backoff_ms:
            raise ConfigurationError("need 0 < MIN_BACKOFF_MS <= MAX_BACKOFF_MS")
        if self.heartbeat_interval_ms * 2 > self.heartbeat_timeout_ms:
            raise ConfigurationError("HEARTBEAT_INTERVAL_MS must be at most half of HEARTBEAT_TIMEOUT_MS")
        if self.ledger_flush_ms <= 0:
            raise ConfigurationError("LEDGER_FLUSH_MS must be > 0")
        if self.ledger_drain_chunk <= 0 or self.ledger_lease_ms < 500:
            raise ConfigurationError("need LEDGER_DRAIN_CHUNK > 0 and LEDGER_LEASE_MS >= 500")
        if self.max_message_bytes < 1024:
            raise ConfigurationError("MAX_MESSAGE_BYTES must be at least 1024")
        if self.smtp_tls not in ("starttls", "smtps", "none"):
            raise ConfigurationError("SMTP_TLS must be 'starttls', 'smtps' or 'none'")
        if self.http_deadline <= 0 or self.aws_connect_timeout <= 0 or self.aws_read_timeout <= 0:
            raise ConfigurationError("HTTP_DEADLINE, AWS_CONNECT_TIMEOUT and AWS_READ_TIMEOUT must be > 0")
        if self.scheduler_clock_start and not self.dev_env:
            raise ConfigurationError("SCHEDULER_CLOCK_START is for tests: it needs DEV_ENV=1")
        if self.notification_retry_backoff_s < 0 or self.scheduler_claim_stale_s <= 0:
            raise ConfigurationError("need NOTIFICATION_RETRY_BACKOFF_S >= 0 and SCHEDULER_CLAIM_STALE_S > 0")
        if self.aws_max_attempts < 1:
            raise ConfigurationError("AWS_MAX_ATTEMPTS must be >= 1")
        if not self.dev_env:
            for name in ("bank_gateway_url", "internal_api_url"):
                if not getattr(self, name).lower().startswith("https://"):
                    raise ConfigurationError(f"{name.upper()} must be an https:// URL outside DEV_ENV=1")
        if self.console_anonymous_role not in ("", "viewer", "operator"):
            raise ConfigurationError("CONSOLE_ANONYMOUS_ROLE must be empty, 'viewer' or 'operator'")
        if self.console_anonymous_role and not self.dev_env:
            raise ConfigurationError("CONSOLE_ANONYMOUS_ROLE is only allowed with DEV_ENV=1")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.ledger_readonly_role):
            raise ConfigurationError("LEDGER_READONLY_ROLE must be a lower-case PostgreSQL identifier "
                                     "(letters, digits, underscores; at most 63)")
        for name in ("redis_url", "database_url"):
            if "://" not in getattr(self, name):
                raise ConfigurationError(f"{name.upper()} is not a URL")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError("REDIS_URL must start with redis://, rediss:// (TLS) or unix://")
        if self.redis_sentinels and not self.redis_sentinel_service:
            raise ConfigurationError("REDIS_SENTINELS is set but REDIS_SENTINEL_SERVICE (the primary's name) is not")
        for address in self.redis_sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigurationError(f"REDIS_SENTINELS: {address!r} is not host:port")
        if self.pg_direct_address:
            host, _, port = self.pg_direct_address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigurationError(f"PG_DIRECT_ADDRESS: {self.pg_direct_address!r} is not host:port")
        if self.redis_connect_timeout_s <= 0 or self.redis_socket_timeout_s <= 0:
            raise ConfigurationError("REDIS_CONNECT_TIMEOUT_S and REDIS_SOCKET_TIMEOUT_S must be > 0")
        if self.redis_retries < 0 or self.redis_wait_replicas < 0 or self.redis_wait_timeout_ms <= 0:
            raise ConfigurationError("need REDIS_RETRIES >= 0, REDIS_WAIT_REPLICAS >= 0, REDIS_WAIT_TIMEOUT_MS > 0")

    @property
    def schedules_active(self) -> bool:
        """Production schedules fire outside development, or when explicitly enabled."""
        return self.schedules_enabled or not self.dev_env


def env_file() -> Path | None:
    """The ``.env`` file every process and command reads: ``JOBS_ENV_FILE`` if set (empty:
    none), else ``.env`` in the current directory, else in the repository root. ``.ci/up``
    writes the settings it chose there, so a second shell needs nothing exported."""
    configured = os.environ.get("JOBS_ENV_FILE")
    if configured is not None:
        return Path(configured) if configured else None
    for candidate in (Path.cwd() / ".env", Path(__file__).resolve().parent.parent / ".env"):
        if candidate.is_file():
            return candidate
    return None


def process_environment() -> dict[str, str]:
    """The ``.env`` file's values overlaid by the real environment (which wins)."""
    path = env_file()
    values: dict[str, str] = {}
    if path is not None and path.is_file():
        try:
            values = {k: v for k, v in dotenv_values(path).items() if v is not None}
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}") from None
    return {**values, **os.environ}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings.from_env()


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for errors and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))
