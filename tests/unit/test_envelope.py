"""The message envelope check (jobcore/envelope.py) and the hostile-payload fixes around it
that need no service: deep payloads in redaction, a log filter that never raises, a
scheduled_at without a zone. The worker-level behaviour is in
tests/acceptance/test_fuzz_payloads.py."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.errors import DecodeError

from jobcore.envelope import MAX_DEPTH, decode_message, envelope_problem
from jobcore.errors import InvalidMessage
from jobcore.redaction import MASK, Redactor
from jobcore.settings import DEFAULT_REDACT_KEYS

pytestmark = pytest.mark.unit

SECRET = "pos1tional-s3cret"
RID = "6f1c0a8e-6b1e-4c4c-9a43-0d2b3f7c9e11"


def message(queue: str = "default", **options: Any) -> dict[str, Any]:
    return {"queue_name": queue, "actor_name": "EXAMPLE", "args": [SECRET], "kwargs": {"n": 1},
            "options": {"redis_message_id": RID, **options}, "message_id": "m-1",
            "message_timestamp": 1_764_000_000_000}


# What the platform's own producers write (send, delayed/retried, scheduler tick, fan-out,
# reconciliation, dead-letter requeue, callbacks and pipelines): all of it must pass.
LEGIT = [
    message(job_context={"tenant_id": 3, "request_id": "r", "extra": {"schedule": "s", "tick_id": 9}},
            ledger_tracked=1),
    message("default.DQ", eta=1_764_000_002_000, due_at_ms=1_764_000_002_000, retries=2, ledger_tracked=1),
    message(scheduled_at="2026-12-02T06:00:00+00:00", schedule_tick_id=12, schedule_name="dr_auto_approval"),
    message(job_context={}, ledger_tracked=1, reconciled=1),
    message(retry_of=None, job_context=None),
    message(retry_of=41, max_retries=0, min_backoff=100, max_backoff=2000.0, max_age=0, time_limit=60_000),
    message(on_success="EXAMPLE", on_failure=None, pipe_ignore=True, pipe_target={"actor_name": "EXAMPLE"}),
    message(retry_on_timeout=False, some_future_option={"x": [1]}),
]


@pytest.mark.parametrize("fields", LEGIT)
def test_what_the_platform_writes_passes_and_decodes_to_the_same_message(fields):
    data = json.dumps(fields).encode()
    decoded = decode_message(data, fields["queue_name"])
    assert decoded == Message(**{**fields, "args": tuple(fields["args"])})


def _broken(mutate: Any) -> dict[str, Any]:
    fields = message()
    mutate(fields)
    return fields


BAD = [
    (lambda f: f.update(queue_name="other"), "queue_name is 'other', but the message was in queue 'default'"),
    (lambda f: f.update(queue_name=None), "queue_name is null"),
    (lambda f: f.update(actor_name=7), "actor_name is int; expected a string"),
    (lambda f: f.update(actor_name="A" * 201), "actor_name has 201 characters; expected 1 to 200"),
    (lambda f: f.update(actor_name="EXAMPLE\x00"), "actor_name contains a control character"),
    (lambda f: f.update(message_id="m" * 65), "message_id has 65 characters; expected 1 to 64"),
    (lambda f: f.update(message_id="\ud800"), "message_id contains a control character or an unpaired surrogate"),
    (lambda f: f.update(message_timestamp=-1), "message_timestamp is out of range"),
    (lambda f: f.update(message_timestamp=10**20), "message_timestamp is out of range"),
    (lambda f: f.update(message_timestamp="soon"), "message_timestamp is str; expected an integer"),
    (lambda f: f.update(message_timestamp=True), "message_timestamp is bool; expected an integer"),
    (lambda f: f.update(args={"a": SECRET}), "args is dict; expected an array"),
    (lambda f: f.update(args=SECRET), "args is str; expected an array"),
    (lambda f: f.update(kwargs=[SECRET]), "kwargs is list; expected an object"),
    (lambda f: f.update(options=SECRET), "options is str; expected an object"),
    (lambda f: f.pop("message_id"), "the payload has no message_id"),
    (lambda f: f.update(surplus=SECRET), "the payload has unknown fields ['surplus']"),
    (lambda f: f["options"].pop("redis_message_id"), "options has no redis_message_id"),
    (lambda f: f["options"].update(redis_message_id=5), "options.redis_message_id is int; expected a string"),
    (lambda f: f["options"].update(retries="x"), "options.retries is str; expected an integer"),
    (lambda f: f["options"].update(retries=10**30), "options.retries is out of range"),
    (lambda f: f["options"].update(retries=-1), "options.retries is out of range"),
    (lambda f: f["options"].update(max_retries="many"), "options.max_retries is str"),
    (lambda f: f["options"].update(max_age=-1), "options.max_age is out of range"),
    (lambda f: f["options"].update(max_age=float("nan")), "options.max_age is out of range"),
    (lambda f: f["options"].update(min_backoff="fast"), "options.min_backoff is str; expected a number"),
    (lambda f: f["options"].update(time_limit="1s"), "options.time_limit is str; expected a number"),
    (lambda f: f["options"].update(eta="soon"), "options.eta is str; expected a number"),
    (lambda f: f["options"].update(eta=1_764_000_000_000), "options.eta is set on a message outside a delay queue"),
    (lambda f: f["options"].update(due_at_ms="later"), "options.due_at_ms is str"),
    (lambda f: f["options"].update(throws="ValueError"), "options.throws cannot come from a message"),
    (lambda f: f["options"].update(retry_when="always"), "options.retry_when cannot come from a message"),
    (lambda f: f["options"].update(job_context="tenant=3"), "options.job_context is str; expected an object"),
    (lambda f: f["options"].update(job_context={"tenant_id": "acme"}), "options.job_context tenant_id is str"),
    (lambda f: f["options"].update(job_context={"tenant_id": 2**31}), "options.job_context tenant_id is out of range"),
    (lambda f: f["options"].update(job_context={"tenant_id": True}), "options.job_context tenant_id is bool"),
    (lambda f: f["options"].update(job_context={"extra": 5}), "options.job_context extra is int"),
    (lambda f: f["options"].update(scheduled_at=12), "options.scheduled_at is int; expected str"),
    (lambda f: f["options"].update(schedule_tick_id="t"), "options.schedule_tick_id is str"),
    (lambda f: f["options"].update(retry_of=0), "options.retry_of is out of range"),
    (lambda f: f["options"].update(on_success=3), "options.on_success is int; expected str"),
    (lambda f: f["options"].update(pipe_target="EXAMPLE"), "options.pipe_target is str; expected dict"),
    (lambda f: f["options"].update(ledger_tracked="yes"), "options.ledger_tracked is str"),
]


@pytest.mark.parametrize("mutate,reason", BAD)
def test_a_broken_envelope_is_refused_naming_the_field_never_the_value(mutate, reason):
    fields = _broken(mutate)
    with pytest.raises(DecodeError) as info:
        decode_message(json.dumps(fields).encode(), "default")
    cause = info.value.__cause__
    assert isinstance(cause, InvalidMessage)
    assert reason in str(cause)
    assert SECRET not in str(cause)


@pytest.mark.parametrize("data", [
    b"\x00\xffnot json", b'{"args": ["' + SECRET.encode() + b'"]', b"\xff" + json.dumps(message()).encode(),
    b"[1, 2]", b"null", b'{"n": ' + b"9" * 5000 + b"}", b"[" * 5000 + b"]" * 5000,
])
def test_what_is_not_json_is_refused_without_quoting_the_payload(data):
    with pytest.raises(DecodeError) as info:
        decode_message(data, "default")
    assert isinstance(info.value.__cause__, InvalidMessage)
    # dramatiq's own DecodeError quotes the whole payload: positional secrets and all.
    assert SECRET not in str(info.value.__cause__)


def test_nesting_is_limited_as_at_send():
    deep: Any = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    fields = message()
    fields["kwargs"] = {"value": deep}
    data = json.dumps(fields).encode()
    problem = envelope_problem(json.loads(data), "default", data)
    assert problem == f"the payload is nested more than {MAX_DEPTH} levels deep"
    shallow = message()
    shallow["args"] = [[[1]] for _ in range(500)]  # many brackets, little depth
    data = json.dumps(shallow).encode()
    assert envelope_problem(json.loads(data), "default", data) is None


def test_redacting_a_payload_nested_deeper_than_recursion_goes_falls_back_to_text():
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    raw = '{"kwargs": {"password": "hunter2"}, "options": ' + "[" * 600 + "]" * 600 + ', "args": ["' + SECRET + '"]}'
    out = redactor.payload(raw)  # raised RecursionError: the rejection was never recorded
    assert "hunter2" not in out and SECRET not in out and MASK in out


def test_the_log_filter_never_raises_and_never_lets_an_unredacted_record_through():
    from middleware.log_redaction import RedactingFilter

    class Boom:
        def __str__(self) -> str:
            raise RecursionError("maximum recursion depth exceeded")

    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "password=hunter2 %s", (Boom(),), None)
    assert RedactingFilter(Redactor(DEFAULT_REDACT_KEYS)).filter(record) is True  # raised out of the log call
    assert "hunter2" not in record.getMessage() and "withheld" in record.getMessage()


def test_a_scheduled_at_without_a_zone_does_not_fail_the_job():
    from periodic.middleware import PeriodicMiddleware

    msg = Message(queue_name="periodic", actor_name="x", args=(), kwargs={},
                  options={"scheduled_at": "2026-01-01T00:00:00"})
    PeriodicMiddleware().before_process_message(None, msg)  # raised TypeError: the job failed


def test_a_logged_message_has_its_positional_secrets_masked_by_parameter_name():
    """dramatiq logs a failed message with its arguments; positional ones were only
    value-redacted, so ``connect('imap.example', 'hunter2')`` went to the log in clear."""
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    from middleware.log_redaction import RedactingFilter

    previous = dramatiq.broker.global_broker
    stub = StubBroker()
    dramatiq.set_broker(stub)
    try:
        @dramatiq.actor(actor_name="CONNECT_MAILBOX", broker=stub)
        def connect(host: str, password: str) -> None: ...

        known = Message(queue_name="default", actor_name="CONNECT_MAILBOX", args=("imap.example", "hunter2"),
                        kwargs={}, options={})
        unknown = Message(queue_name="default", actor_name="GONE", args=("s3cr3t-positional",), kwargs={},
                          options={})
        out = []
        for message in (known, unknown):
            record = logging.LogRecord("dramatiq.worker", logging.ERROR, __file__, 1, "Failed to process message %s",
                                       (message,), None)
            RedactingFilter(Redactor(DEFAULT_REDACT_KEYS)).filter(record)
            out.append(record.getMessage())
    finally:
        dramatiq.broker.global_broker = previous
    assert out == [f"Failed to process message CONNECT_MAILBOX('imap.example', '{MASK}')",
                   f"Failed to process message GONE('{MASK}')"]
