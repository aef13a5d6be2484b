"""A Hypothesis state machine over the real ledger SQL: deliver, crash, retry, revoke,
expire and replayed (late or duplicate) events, in any order. A FINISHED run never
changes again, a message never has two rows, and attempts never go down."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from jobcore.ledger import LedgerStore, identity_params, iso, utcnow
from jobcore.revocation import revoke
from tests.conftest import TEST_ENV
from tests.support.ledger import count, run_row

pytestmark = pytest.mark.integration


class LedgerMachine(RuleBasedStateMachine):
    store: LedgerStore

    @initialize()
    def setup(self) -> None:
        self.message_id = str(uuid.uuid4())
        self.identity = identity_params(message_id=self.message_id, actor_name="EXAMPLE", queue_name="default",
                                        tenant_id=None, args=[], kwargs={}, context={}, enqueued_at=utcnow())
        self.applied: list[tuple[str, dict]] = []
        self.finished: dict | None = None
        self.max_attempts = 0

    def _apply(self, kind: str, **extra: object) -> None:
        params = {**self.identity, "at": iso(utcnow()), "retry_of": None, **extra}
        self.store.apply(kind, params)
        self.applied.append((kind, params))

    @rule()
    def enqueue(self) -> None:
        self._apply("pending")

    @rule()
    def deliver(self) -> None:  # a (re)delivery: after a crash the same message starts again
        self._apply("started", worker_id="w1")

    @rule(resolution=st.sampled_from(["COMPLETED", "REVOKED", "EXPIRED"]))
    def finish(self, resolution: str) -> None:
        self._apply("finished", resolution=resolution, attempts=1, result="null")

    @rule(final=st.booleans())
    def fail_attempt(self, final: bool) -> None:
        row = run_row(self.message_id)
        attempt = (row["attempts"] if row else 0) or 1
        err = {"attempt": attempt, "exception_type": "E", "error_message": "boom", "traceback": "",
               "fingerprint": "f", "will_retry": not final, "attempts": attempt}
        if final:
            self._apply("final_error", resolution="ERROR", result="null", **err)
        else:
            self._apply("retry_wait", retry_at=iso(utcnow()), **err)

    @rule()
    def operator_revokes(self) -> None:
        if run_row(self.message_id) is not None:
            revoke(self.message_id, redis_client=_redis())

    @rule(data=st.data())
    def replay_an_old_event(self, data: st.DataObject) -> None:
        if self.applied:
            kind, params = data.draw(st.sampled_from(self.applied))
            self.store.apply(kind, params)

    @invariant()
    def one_row_and_finished_is_final(self) -> None:
        assert count("SELECT count(*) FROM job_runs WHERE message_id = :m", m=self.message_id) <= 1
        row = run_row(self.message_id)
        if row is None:
            return
        assert (row["status"] == "FINISHED") == (row["resolution"] is not None)
        assert row["attempts"] >= self.max_attempts
        self.max_attempts = row["attempts"]
        snapshot = {k: row[k] for k in ("status", "resolution", "finished_at", "result")}
        if self.finished is not None:
            assert snapshot == self.finished, "a FINISHED run changed"
        elif row["status"] == "FINISHED":
            self.finished = snapshot


def _redis():
    import redis

    return redis.Redis.from_url(TEST_ENV["REDIS_URL"])


def test_ledger_state_machine(clean_state):
    LedgerMachine.store = LedgerStore(TEST_ENV["DATABASE_URL"], None, "unused")
    runner = LedgerMachine.TestCase
    runner.settings = settings(max_examples=60, stateful_step_count=12, deadline=None,
                               suppress_health_check=list(HealthCheck))
    runner().runTest()
