"""Case-management pieces that need no services: message parsing, FETCH grouping,
credential encryption and its redaction."""

from __future__ import annotations

import pytest

from actors.casemgmt import credentials
from actors.casemgmt.errors import CredentialError, CredentialKeyMissing, MailProviderError
from actors.casemgmt.imap_provider import _group_fetch_response, parse_message
from actors.casemgmt.providers import get_provider
from jobcore.redaction import get_redactor

pytestmark = pytest.mark.unit

HEADERS = (b"Message-ID: <child@x>\r\nIn-Reply-To: <parent@x>\r\nReferences: <root@x> <parent@x>\r\n"
           b"Subject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\nFrom: \"Client, A\" <Client.A@Example.com>\r\n"
           b"To: me@agency.example, other@agency.example\r\nCc: Boss <boss@agency.example>\r\n"
           b"Date: Sun, 22 Nov 2026 10:00:00 -0500\r\n\r\n")


def test_parse_message_extracts_ids_thread_and_lowercased_addresses():
    m = parse_message(7, HEADERS, b"body\x00text", 1234)
    assert (m.uid, m.message_id, m.in_reply_to, m.thread_id) == (7, "<child@x>", "<parent@x>", "<root@x>")
    assert m.subject == "Résumé" and m.from_address == "client.a@example.com"
    assert m.to_addresses == ["me@agency.example", "other@agency.example"]
    assert m.cc_addresses == ["boss@agency.example"]
    assert m.sent_at is not None and m.sent_at.utcoffset().total_seconds() == -5 * 3600
    assert m.body_preview == "bodytext" and m.size_bytes == 1234


def test_message_without_message_id_gets_a_stable_synthetic_id():
    headers = b"Subject: no id\r\nFrom: a@b.example\r\n\r\n"
    first, again = parse_message(1, headers, b"", None), parse_message(99, headers, b"", None)
    assert first.message_id == again.message_id and first.message_id.startswith("<sha256:")
    assert first.thread_id == first.message_id
    assert parse_message(1, b"Subject: other\r\n\r\n", b"", None).message_id != first.message_id


def test_fetch_response_grouping_handles_two_literals_per_message_and_bare_entries():
    data = [(b"1 (UID 10 RFC822.SIZE 50 BODY[HEADER.FIELDS (X)] {3}", b"h1\n"), (b" BODY[TEXT]<0> {2}", b"b1"), b")",
            (b"2 (UID 11 RFC822.SIZE 60 BODY[HEADER.FIELDS (X)] {3}", b"h2\n"), (b" BODY[TEXT]<0> {2}", b"b2"), b")",
            b"3 (FLAGS (\\Seen))"]
    groups = list(_group_fetch_response(data))
    assert [g[1] for g in groups] == [[b"h1\n", b"b1"], [b"h2\n", b"b2"], []]
    assert b"UID 11" in groups[1][0] and b"UID" not in groups[2][0]


def test_credentials_round_trip_rotate_and_register_with_the_redactor(monkeypatch):
    from jobcore.settings import get_settings

    def keys(value: str) -> None:  # settings are read once per process: re-read after a change
        monkeypatch.setenv(credentials.ENV, value)
        get_settings.cache_clear()

    old, new = credentials.generate_key(), credentials.generate_key()
    keys(old)
    secret = "mailbox-pw-unit-4242"
    token = credentials.encrypt_credential(secret)
    assert secret.encode() not in token
    keys(f"{new},{old}")  # rotation: new key first, old still decrypts
    assert credentials.decrypt_credential(token) == secret
    assert secret not in get_redactor().text(f"login failed for {secret}")
    keys(new)
    with pytest.raises(CredentialError):
        credentials.decrypt_credential(token)
    keys("")
    with pytest.raises(CredentialKeyMissing):
        credentials.encrypt_credential("x" * 8)
    monkeypatch.undo()
    get_settings.cache_clear()


def test_only_the_imap_provider_is_implemented():
    assert get_provider("imap").name == "imap"
    with pytest.raises(MailProviderError, match="gmail"):
        get_provider("gmail")
