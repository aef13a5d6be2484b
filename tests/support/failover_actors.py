"""Test actors whose executions are counted in PostgreSQL (``dramatiq actors tests.support.failover_actors``).

Redis can lose its newest writes in a failover, so counts kept there (COUNTED) cannot
judge one: RECORDED writes one row per execution (with the worker id) to the control
database, and its effect once per idempotency key, as the domain jobs do."""

from __future__ import annotations

import time

import dramatiq
from sqlalchemy import text

import jobplatform
from jobcore.context import current_message_id
from jobcore.db import control_engine, control_session

DDL = ("CREATE TABLE IF NOT EXISTS test_job_executions (id bigserial PRIMARY KEY, message_id text NOT NULL, "
       "worker_id text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());"
       "CREATE TABLE IF NOT EXISTS test_job_effects (key text PRIMARY KEY, message_id text NOT NULL, "
       "at timestamptz NOT NULL DEFAULT clock_timestamp())")


def reset_tables() -> None:
    with control_engine().begin() as conn:
        conn.execute(text(DDL))
        conn.execute(text("TRUNCATE test_job_executions, test_job_effects"))


@dramatiq.actor(actor_name="RECORDED", queue_name="default", max_retries=0)
def recorded(seconds: float = 0.0, key: str | None = None) -> None:
    mid = current_message_id()
    with control_session() as session:
        session.execute(text("INSERT INTO test_job_executions (message_id, worker_id) VALUES (:m, :w)"),
                        {"m": mid, "w": jobplatform.broker.broker_id})
    if seconds:
        time.sleep(seconds)
    if key is not None:
        with control_session() as session:
            session.execute(text("INSERT INTO test_job_effects (key, message_id) VALUES (:k, :m) "
                                 "ON CONFLICT DO NOTHING"), {"k": key, "m": mid})
