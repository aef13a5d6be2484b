from __future__ import annotations

import logging

import pytest

from jobcore.redaction import MASK, Redactor
from jobcore.settings import DEFAULT_REDACT_KEYS

pytestmark = pytest.mark.unit


@pytest.fixture()
def redactor() -> Redactor:
    return Redactor(DEFAULT_REDACT_KEYS)


def test_nested_keys_are_masked_case_insensitively(redactor):
    value = {"user": "ann", "Password": "p", "bank": {"Account_Number": "123", "routing_number": "9",
                                                       "items": [{"api_key": "k", "amount": 5}]},
             "refresh_token": "t", "clientSecret": "s"}
    out = redactor.value(value)
    assert out == {"user": "ann", "Password": MASK,
                   "bank": {"Account_Number": MASK, "routing_number": MASK, "items": [{"api_key": MASK, "amount": 5}]},
                   "refresh_token": MASK, "clientSecret": MASK}
    assert value["Password"] == "p"  # the input is not modified


def test_positional_arguments_are_masked_by_parameter_name(redactor):
    def connect(host: str, password: str, port: int = 993) -> None: ...

    args, kwargs = redactor.arguments(connect, ["imap.example", "hunter2"], {"port": 993})
    assert args == ["imap.example", MASK] and kwargs == {"port": 993}


def test_free_text_pairs_and_registered_secrets_are_masked(redactor):
    redactor.add_secret("correct-horse-battery")
    text = ('login failed password=abc123 token: "xyz" api_key=\'k1\' user=bob '
            'conn=imap://bob:correct-horse-battery@host')
    out = redactor.text(text)
    for secret in ("abc123", "xyz", "k1", "correct-horse-battery"):
        assert secret not in out
    assert "user=bob" in out


def test_short_strings_are_not_registered_as_secrets(redactor):
    redactor.add_secret("ab")
    assert redactor.text("a table of abs") == "a table of abs"


def test_configurable_keys():
    r = Redactor(["pin"])
    assert r.value({"pin": 1, "password": 2}) == {"pin": MASK, "password": 2}


def test_log_filter_redacts_message_arguments_and_tracebacks(redactor):
    import dramatiq

    from middleware.log_redaction import RedactingFilter

    message = dramatiq.Message(queue_name="q", actor_name="A", args=("x",), kwargs={"password": "pw1"},
                               options={})
    try:
        raise RuntimeError("token=tok999 rejected")
    except RuntimeError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord("dramatiq", logging.ERROR, __file__, 1, "Failed %s", (message,), exc_info)
    assert RedactingFilter(redactor).filter(record)
    formatted = logging.Formatter().format(record)
    assert "pw1" not in formatted and "tok999" not in formatted
    assert "A('x', password='[REDACTED]')" in formatted
