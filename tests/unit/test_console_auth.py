"""Console accounts: password hashing, settings parsing, tokens, the compose service."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from console.auth import Accounts, hash_password, new_token, verify_password
from jobcore.errors import ConfigurationError
from jobcore.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def settings(**values: object) -> Settings:
    return dataclasses.replace(Settings(dev_env=True), **values)  # type: ignore[arg-type]


def test_passwords_are_stored_as_salted_scrypt_and_verified() -> None:
    stored = hash_password("correct horse battery", n=2**12)
    assert stored.startswith("scrypt:4096:8:1:") and "correct" not in stored and "$" not in stored
    assert stored != hash_password("correct horse battery", n=2**12)  # salted
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert not verify_password("x", "md5:abc") and not verify_password("x", "scrypt:garbage")


def test_accounts_from_settings_and_roles() -> None:
    token, digest = new_token()
    s = settings(console_users=(f"ann:operator:{hash_password('ann-password-1', n=2**12)}",
                                f"bob:viewer:{hash_password('bob-password-1', n=2**12)}"),
                 console_tokens=(f"ci:viewer:{digest}",))
    accounts = Accounts.from_settings(s)
    ann = accounts.login("ann", "ann-password-1")
    assert ann is not None and ann.role == "operator" and ann.can("viewer") and ann.can("operator")
    bob = accounts.login("bob", "bob-password-1")
    assert bob is not None and bob.can("viewer") and not bob.can("operator")
    assert accounts.login("bob", "ann-password-1") is None and accounts.login("eve", "ann-password-1") is None
    via_token = accounts.from_token(token)
    assert via_token is not None and (via_token.name, via_token.role, via_token.via) == ("ci", "viewer", "token")
    assert accounts.from_token(token + "x") is None


@pytest.mark.parametrize("entry", ["ann:admin:scrypt:1:2:3:4:5", "ann:viewer:plaintext-password", "ann:viewer",
                                   ":viewer:scrypt:1:2:3:4:5"])
def test_a_malformed_user_entry_is_refused_without_echoing_it(entry: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        Accounts.from_settings(settings(console_users=(entry,)))
    assert "CONSOLE_USERS entry 1" in str(err.value) and entry not in str(err.value)


def test_no_anonymous_mode_outside_dev_env() -> None:
    with pytest.raises(ConfigurationError, match="only allowed with DEV_ENV=1"):
        Settings.from_env({"CONSOLE_ANONYMOUS_ROLE": "viewer", "DEV_ENV": "0"})
    assert Settings.from_env({"CONSOLE_ANONYMOUS_ROLE": "viewer", "DEV_ENV": "1"}).console_anonymous_role == "viewer"
    assert Accounts.from_settings(settings(console_anonymous_role="viewer", dev_env=False)).anonymous_role == ""


def test_hash_password_command_prints_a_users_entry() -> None:
    out = subprocess.run([sys.executable, "-m", "console", "hash-password", "--user", "ann", "--role", "operator",
                          "--password-stdin"], input="a long enough password\n", capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    entry = out.stdout.strip()
    assert entry.startswith("ann:operator:scrypt:") and "a long enough password" not in entry
    assert verify_password("a long enough password", entry.split(":", 2)[2])
    short = subprocess.run([sys.executable, "-m", "console", "hash-password", "--password-stdin"], input="short\n",
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert short.returncode == 1 and "at least 12" in short.stderr


def test_compose_publishes_the_console_on_loopback_only() -> None:
    import yaml

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["console"]
    assert service["ports"] == ["127.0.0.1:9400:9400"]
    assert service["command"] == ["python", "-m", "console"]
    for key in ("CONSOLE_USERS", "CONSOLE_SECRET_KEY", "CONSOLE_TOKENS"):
        assert str(service["environment"][key]).startswith("${"), key


def test_jobctl_has_a_console_command() -> None:
    out = subprocess.run([sys.executable, "-m", "cli", "console", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0 and "Usage: jobctl console" in out.stdout and "--port" in out.stdout
