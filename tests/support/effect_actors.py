"""Test-only actors with a domain effect or an execution count (`dramatiq actors tests.support.effect_actors`).

EFFECT_ONCE writes its effect with the idempotency pattern the domain jobs use (a
unique key per logical job, ON CONFLICT DO NOTHING), and counts executions separately,
so a test can tell "ran twice" from "had two effects"."""

from __future__ import annotations

import time

import dramatiq
from sqlalchemy import text

import jobplatform
from jobcore.context import current_message_id
from jobcore.db import control_session

DDL = ("CREATE TABLE IF NOT EXISTS test_effects (message_id text PRIMARY KEY, at timestamptz DEFAULT now());"
       "CREATE TABLE IF NOT EXISTS test_executions (id serial PRIMARY KEY, message_id text)")


@dramatiq.actor(actor_name="EFFECT_ONCE", queue_name="default", max_retries=0)
def effect_once(seconds: float) -> str:
    with control_session() as session:
        session.execute(text("INSERT INTO test_executions (message_id) VALUES (:m)"), {"m": current_message_id()})
    time.sleep(seconds)
    with control_session() as session:
        session.execute(text("INSERT INTO test_effects (message_id) VALUES (:m) ON CONFLICT DO NOTHING"),
                        {"m": current_message_id()})
    return "done"


def executions_key() -> str:
    """Redis hash message id -> how many times COUNTED ran it (the test namespace)."""
    return f"{jobplatform.broker.namespace}:test:executions"


@dramatiq.actor(actor_name="COUNTED", queue_name="default", max_retries=0)
def counted(seconds: float = 0.0) -> int:
    """Counts its executions per message id in Redis (executions, not ledger rows)."""
    n = int(jobplatform.broker.client.hincrby(executions_key(), str(current_message_id()), 1))
    if seconds:
        time.sleep(seconds)
    return n
