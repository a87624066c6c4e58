"""bridge.stream_token: signed, expiring, per task; refused when missing, expired or forged."""

from __future__ import annotations

import pytest

import bridge
from bridge.errors import ConfigurationError
from bridge.stream_tokens import TokenCheck, check_stream_token, relay_secret, stream_token

SECRET = b"a-secret-of-enough-bytes"


def test_a_token_opens_its_own_task_until_it_expires() -> None:
    token = stream_token("task-1", ttl=60, secret=SECRET, now=1_000_000)
    assert check_stream_token("task-1", token, SECRET, now=1_000_059) is TokenCheck.OK
    assert check_stream_token("task-1", token, SECRET, now=1_000_060) is TokenCheck.EXPIRED
    assert check_stream_token("task-2", token, SECRET, now=1_000_000) is TokenCheck.FORGED
    assert check_stream_token("task-1", token, b"another-secret-entirely", now=1_000_000) is TokenCheck.FORGED


def test_tampering_with_the_expiry_breaks_the_signature() -> None:
    token = stream_token("task-1", ttl=60, secret=SECRET, now=1_000_000)
    expiry, _, signature = token.partition(".")
    later = f"{int(expiry) + 10**6}.{signature}"
    assert check_stream_token("task-1", later, SECRET, now=1_000_000) is TokenCheck.FORGED


@pytest.mark.parametrize("token, outcome", [
    (None, TokenCheck.MISSING), ("", TokenCheck.MISSING), ("abc", TokenCheck.MALFORMED),
    ("12.", TokenCheck.MALFORMED), ("x1.abc", TokenCheck.MALFORMED), ("9" * 13 + ".abc", TokenCheck.MALFORMED),
    ("99999999999.AAAA", TokenCheck.FORGED),
])
def test_missing_and_malformed_tokens(token: str | None, outcome: TokenCheck) -> None:
    assert check_stream_token("task-1", token, SECRET) is outcome


def test_http_status_of_each_outcome() -> None:
    assert TokenCheck.MISSING.http_status == 401
    assert {TokenCheck.MALFORMED.http_status, TokenCheck.EXPIRED.http_status, TokenCheck.FORGED.http_status} == {403}
    assert TokenCheck.OK.http_status == 200


def test_bridge_stream_token_reads_the_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_RELAY_SECRET", SECRET.decode())
    token = bridge.stream_token("task-9", ttl=3600)
    assert check_stream_token("task-9", token, SECRET) is TokenCheck.OK
    assert "stream_token" in bridge.__all__


def test_no_secret_or_a_short_one_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_RELAY_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="BRIDGE_RELAY_SECRET is not set"):
        bridge.stream_token("task-1")
    monkeypatch.setenv("BRIDGE_RELAY_SECRET", "short")
    with pytest.raises(ConfigurationError, match="at least 16"):
        relay_secret()
    with pytest.raises(ConfigurationError, match="ttl must be positive"):
        stream_token("task-1", ttl=0, secret=SECRET)
