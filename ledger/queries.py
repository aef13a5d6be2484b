"""Every statement on ``job_runs``, ``job_errors``, ``rejected_messages`` and the drain
bookkeeping tables, by name. Nothing else in the platform spells this SQL.

Two dialects of parameters, by who runs them:

* ``DRAIN_*`` and ``CURSOR_*`` run on the drainer's own psycopg2 connection
  (``%s`` placeholders, arrays for ``unnest``): one statement per event kind applies a
  whole chunk of buffered events;
* the rest are SQLAlchemy ``text()`` constructs (``:name`` placeholders) run on the
  control engine by revocation, reconciliation, retention and the readers (CLI, console,
  exporter).

Every write implements the rules of :mod:`ledger.model`: a FINISHED row is never
changed, attempts never go down, any event can create the row.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text

# -- the drainer: one statement per kind for a whole chunk -------------------------------
DRAIN_PENDING = """
INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, enqueued_at, args, kwargs, context, status,
                      attempts, updated_at, retry_of)
SELECT u.m, u.a, u.q, u.t, to_timestamp(u.e), u.g::jsonb, u.k::jsonb, u.c::jsonb, 'PENDING', 0, to_timestamp(u.at),
       (SELECT id FROM job_runs x WHERE x.id = u.r)
  FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], %s::text[], %s::text[], %s::text[],
              %s::float8[], %s::bigint[]) AS u(m, a, q, t, e, g, k, c, at, r)
 ORDER BY u.m
ON CONFLICT (message_id) DO NOTHING
"""

DRAIN_STARTED = """
INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, enqueued_at, status, attempts, started_at,
                      worker_id, updated_at)
SELECT u.m, u.a, u.q, u.t, to_timestamp(u.e), 'STARTED', u.n, to_timestamp(u.at), u.w, to_timestamp(u.at)
  FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], %s::float8[], %s::text[], %s::int[])
       AS u(m, a, q, t, e, at, w, n)
 ORDER BY u.m
ON CONFLICT (message_id) DO UPDATE
   SET status = 'STARTED', attempts = EXCLUDED.attempts, started_at = EXCLUDED.started_at,
       worker_id = EXCLUDED.worker_id, retry_at = NULL, updated_at = EXCLUDED.updated_at
 WHERE job_runs.status <> 'FINISHED' AND EXCLUDED.attempts >= job_runs.attempts
"""

DRAIN_PROGRESS = """
UPDATE job_runs j SET progress = u.p::jsonb, updated_at = to_timestamp(u.at)
  FROM unnest(%s::text[], %s::text[], %s::float8[]) AS u(m, p, at)
 WHERE j.message_id = u.m AND j.status <> 'FINISHED'
"""

DRAIN_ATTEMPT_FAILED = """
INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, enqueued_at, status, attempts, retry_at,
                      updated_at)
SELECT u.m, u.a, u.q, u.t, to_timestamp(u.e), 'STARTED', u.n, to_timestamp(u.ra), to_timestamp(u.at)
  FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], %s::float8[], %s::float8[], %s::int[])
       AS u(m, a, q, t, e, at, ra, n)
 ORDER BY u.m
ON CONFLICT (message_id) DO UPDATE
   SET status = 'STARTED', attempts = EXCLUDED.attempts, retry_at = EXCLUDED.retry_at,
       updated_at = EXCLUDED.updated_at
 WHERE job_runs.status <> 'FINISHED' AND EXCLUDED.attempts >= job_runs.attempts
"""

# A run whose PENDING is in the same chunk (a short job drained once it was done) is
# inserted FINISHED with its arguments in one row write instead of an insert and an update.
DRAIN_FINISHED = """
INSERT INTO job_runs (message_id, actor_name, queue_name, tenant_id, enqueued_at, status, resolution, attempts,
                      started_at, worker_id, finished_at, result, updated_at, args, kwargs, context, retry_of)
SELECT u.m, u.a, u.q, u.t, to_timestamp(u.e), 'FINISHED', u.res, u.n, to_timestamp(u.s), u.w, to_timestamp(u.at),
       u.r::jsonb, to_timestamp(u.at), COALESCE(u.g::jsonb, '[]'), COALESCE(u.k::jsonb, '{}'),
       COALESCE(u.c::jsonb, '{}'), (SELECT id FROM job_runs x WHERE x.id = u.p)
  FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], %s::float8[], %s::text[], %s::int[],
              %s::text[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[])
       AS u(m, a, q, t, e, at, res, n, r, s, w, g, k, c, p)
 ORDER BY u.m
ON CONFLICT (message_id) DO UPDATE
   SET status = 'FINISHED', resolution = EXCLUDED.resolution, finished_at = EXCLUDED.finished_at,
       result = EXCLUDED.result, retry_at = NULL, attempts = GREATEST(job_runs.attempts, EXCLUDED.attempts),
       started_at = COALESCE(EXCLUDED.started_at, job_runs.started_at),
       worker_id = COALESCE(EXCLUDED.worker_id, job_runs.worker_id), updated_at = EXCLUDED.updated_at
 WHERE job_runs.status <> 'FINISHED'
"""

DRAIN_ERRORS = """
INSERT INTO job_errors (job_run_id, attempt, exception_type, message, traceback, fingerprint, will_retry, created_at)
SELECT r.id, u.n, u.et, u.msg, u.tb, u.fp, u.wr, to_timestamp(u.at)
  FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bool[], %s::float8[])
       AS u(m, n, et, msg, tb, fp, wr, at)
  JOIN job_runs r ON r.message_id = u.m
ON CONFLICT (job_run_id, attempt) DO NOTHING
"""

DRAIN_REJECTED = """
INSERT INTO rejected_messages (queue_name, redis_message_id, message_id, actor_name, reason, payload, created_at)
VALUES (%s, %s, %s, %s, %s, %s, to_timestamp(%s))
"""

DRAIN_CLOSE_REJECTED = """
UPDATE job_runs SET status = 'FINISHED', resolution = 'ERROR', finished_at = to_timestamp(%s), retry_at = NULL,
       updated_at = to_timestamp(%s)
 WHERE message_id = %s AND status <> 'FINISHED'
"""

DRAIN_DEAD_EVENT = """
INSERT INTO ledger_dead_events (namespace, stream_id, payload, error, created_at)
VALUES (%s, %s, %s, %s, now())
"""

# The drain cursor: the last stream entry applied, per namespace. Advancing it is a
# compare-and-set in the same transaction as the events it covers, so two drainers can
# never both apply one chunk: the second one's UPDATE matches no row and it rolls back.
CURSOR_INIT = """
INSERT INTO ledger_cursor (namespace, epoch, last_id, applied, updated_at) VALUES (%s, '', '0-0', 0, now())
ON CONFLICT (namespace) DO NOTHING
"""

CURSOR_READ = "SELECT epoch, last_id FROM ledger_cursor WHERE namespace = %s"

CURSOR_ADVANCE = """
UPDATE ledger_cursor SET epoch = %s, last_id = %s, applied = applied + %s, updated_at = now()
 WHERE namespace = %s AND epoch = %s AND last_id = %s
"""

# -- control-engine statements (SQLAlchemy) ----------------------------------------------
CURSOR_STATE: TextClause = text("SELECT epoch, last_id, applied, updated_at FROM ledger_cursor WHERE namespace = :ns")

# An operator's revoke of a run that is not running: PENDING, or waiting for a retry.
REVOKE_QUEUED: TextClause = text("""
UPDATE job_runs SET status = 'FINISHED', resolution = 'REVOKED', finished_at = now(), revoke_requested_at = now(),
       retry_at = NULL, updated_at = now()
 WHERE message_id = :m AND (status = 'PENDING' OR (status = 'STARTED' AND retry_at IS NOT NULL))
RETURNING id
""")

REVOKE_RUNNING: TextClause = text("""
UPDATE job_runs SET revoke_requested_at = now(), updated_at = now()
 WHERE message_id = :m AND status = 'STARTED'
RETURNING id
""")

RUN_BY_MESSAGE_ID: TextClause = text("SELECT * FROM job_runs WHERE message_id = :m")
RUN_BY_ID: TextClause = text("SELECT * FROM job_runs WHERE id = :id")
RUN_STATUS: TextClause = text("SELECT status, resolution FROM job_runs WHERE message_id = :m")

RUN_ERRORS: TextClause = text("""
SELECT attempt, exception_type, message, will_retry, created_at, fingerprint, traceback
  FROM job_errors WHERE job_run_id = :id ORDER BY attempt
""")

# Runs that may have lost their message: open, idle past the grace period, and not held
# by a live worker. ``ix_job_runs_open`` keeps this cheap on a large ledger.
RECONCILE_CANDIDATES: TextClause = text("""
SELECT message_id, actor_name, queue_name, args, kwargs, context, enqueued_at
  FROM job_runs
 WHERE status <> 'FINISHED' AND updated_at < now() - make_interval(secs => :grace)
   AND (status = 'PENDING' OR retry_at IS NOT NULL OR NOT (worker_id = ANY(:live)))
 ORDER BY id LIMIT 10000
""")

TOUCH_RUN: TextClause = text("UPDATE job_runs SET updated_at = now() WHERE message_id = :m")

CLOSE_LOST: TextClause = text("""
WITH closed AS (
    UPDATE job_runs SET status = 'FINISHED', resolution = 'ERROR', finished_at = now(), retry_at = NULL,
           updated_at = now()
     WHERE message_id = :m AND status <> 'FINISHED'
    RETURNING id
)
INSERT INTO job_errors (job_run_id, attempt, exception_type, message, traceback, fingerprint, will_retry, created_at)
SELECT id, 0, :exception_type, :message, '', :fingerprint, false, now() FROM closed
ON CONFLICT (job_run_id, attempt) DO NOTHING
""")

PRUNE_FINISHED: TextClause = text("""
DELETE FROM job_runs WHERE id IN (
    SELECT id FROM job_runs WHERE status = 'FINISHED' AND finished_at < now() - :days * interval '1 day'
     ORDER BY finished_at LIMIT :n FOR UPDATE SKIP LOCKED)
""")

PRUNE_REJECTED: TextClause = text("DELETE FROM rejected_messages WHERE created_at < now() - :days * interval '1 day'")

RUN_ID_OF: TextClause = text("SELECT id FROM job_runs WHERE message_id = :m")

DEAD_EVENTS_COUNT: TextClause = text("SELECT count(*) FROM ledger_dead_events WHERE namespace = :ns")

# The audit trail of operator actions (revoke, retry, requeue, discard): who and when.
RECORD_OPERATOR_ACTION: TextClause = text("""
INSERT INTO operator_actions (action, message_id, run_id, operator, detail, created_at)
VALUES (:action, :message_id, :run_id, :operator, CAST(:detail AS jsonb), now())
RETURNING id
""")

RETRIES_OF: TextClause = text(
    "SELECT id, message_id, status, resolution FROM job_runs WHERE retry_of = :id ORDER BY id")

# -- the console's reads (console/) ----------------------------------------------------
# Runs finished per time bucket and resolution, over ``ix_job_runs_finished_at``.
FINISHED_BUCKETS: TextClause = text("""
SELECT date_bin(make_interval(secs => :bucket), finished_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       resolution, count(*) AS n
  FROM job_runs
 WHERE finished_at > now() - make_interval(secs => :window)
 GROUP BY 1, 2
""")

# Failed attempts per time bucket, over ``ix_job_errors_created_at``.
ERROR_BUCKETS: TextClause = text("""
SELECT date_bin(make_interval(secs => :bucket), created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       count(*) AS n
  FROM job_errors
 WHERE created_at > now() - make_interval(secs => :window)
 GROUP BY 1
""")

# Failed attempts of a window grouped by fingerprint, with the actors and tenants each group
# hit (one job_runs probe per distinct run, not per attempt), the exception and message of
# its newest run, and when it was first seen in the retained history (probes of
# ``ix_job_errors_fingerprint`` per group). The window's rows are read once, narrow.
ERROR_GROUPS: TextClause = text("""
WITH e AS MATERIALIZED (
    SELECT fingerprint, job_run_id, created_at FROM job_errors
     WHERE created_at > now() - make_interval(secs => :window)
), g AS (
    SELECT fingerprint, count(*) AS attempts, count(DISTINCT job_run_id) AS runs, max(created_at) AS last_seen,
           max(job_run_id) AS latest_run_id
      FROM e GROUP BY fingerprint ORDER BY max(created_at) DESC LIMIT :limit
), who AS (
    SELECT d.fingerprint, array_agg(DISTINCT r.actor_name) AS actors,
           array_remove(array_agg(DISTINCT r.tenant_id), NULL) AS tenants
      FROM (SELECT DISTINCT fingerprint, job_run_id FROM e) d JOIN job_runs r ON r.id = d.job_run_id
     GROUP BY d.fingerprint
)
SELECT g.*, l.exception_type, l.message, who.actors, who.tenants, f.first_seen
  FROM g JOIN who USING (fingerprint)
 CROSS JOIN LATERAL (SELECT x.exception_type, x.message FROM job_errors x
                      WHERE x.fingerprint = g.fingerprint AND x.job_run_id = g.latest_run_id
                      ORDER BY x.attempt DESC LIMIT 1) l
 CROSS JOIN LATERAL (SELECT x.created_at AS first_seen FROM job_errors x
                      WHERE x.fingerprint = g.fingerprint ORDER BY x.job_run_id LIMIT 1) f
 ORDER BY g.last_seen DESC
""")

# Finished runs and failures (ERROR, EXPIRED, REVOKED) per tenant in a window.
TENANT_OUTCOMES: TextClause = text("""
SELECT tenant_id, count(*) AS finished, count(*) FILTER (WHERE resolution <> 'COMPLETED') AS failed,
       count(*) FILTER (WHERE resolution = 'ERROR') AS errors, max(finished_at) FILTER (WHERE resolution = 'ERROR')
       AS last_error_at
  FROM job_runs
 WHERE finished_at > now() - make_interval(secs => :window) AND tenant_id IS NOT NULL
 GROUP BY tenant_id
""")

# The audit trail of one run (by its message id): who did what, when.
ACTIONS_FOR_MESSAGE: TextClause = text("""
SELECT id, action, operator, detail, created_at FROM operator_actions WHERE message_id = :m ORDER BY id
""")

# The newest operator actions (console overview).
RECENT_ACTIONS: TextClause = text("""
SELECT id, action, message_id, run_id, operator, detail, created_at FROM operator_actions ORDER BY id DESC LIMIT :n
""")

# Distinct actor names in the ledger (filter choices), one index probe per name: a loose
# index scan over ``ix_job_runs_actor_id`` instead of a DISTINCT over every row.
ACTOR_NAMES: TextClause = text("""
WITH RECURSIVE names AS (
    (SELECT actor_name FROM job_runs ORDER BY actor_name LIMIT 1)
    UNION ALL
    SELECT (SELECT j.actor_name FROM job_runs j WHERE j.actor_name > n.actor_name ORDER BY j.actor_name LIMIT 1)
      FROM names n WHERE n.actor_name IS NOT NULL
)
SELECT actor_name FROM names WHERE actor_name IS NOT NULL LIMIT 500
""")

# Why the worker rejected dead-lettered messages (by their Redis ids), newest first.
REJECTIONS_BY_REDIS_ID: TextClause = text("""
SELECT redis_message_id, reason, created_at FROM rejected_messages
 WHERE queue_name = :q AND redis_message_id = ANY(:ids) ORDER BY id DESC
""")
