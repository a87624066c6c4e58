"""`bridge relay` (alias `bridge gateway`): start checks, first log line, tokens, clean stops."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.embedded_redis import free_port
from bridge.stream_tokens import stream_token
from bridge.testing.waiting import wait_until

from .conftest import SECRET, append, finish

BRIDGE = str(Path(sys.executable).with_name("bridge"))
PASSWORD = "pa55-word-in-the-url"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "BRIDGE_RELAY_SECRET"}
    return {**base, **extra}


@pytest.fixture
def redis_with_password() -> Iterator[str]:
    """A redis-server that requires a password: its URL carries one to mask."""
    port, workdir = free_port(), tempfile.mkdtemp(prefix="bridge-relay-test-")
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"

    def up() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.RedisError:
            return False

    try:
        wait_until(up, 10, 0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_without_the_secret_it_refuses_to_start(redis_url):
    proc = subprocess.run([BRIDGE, "relay", "--port", str(free_port()), "--redis-url", redis_url], env=env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7, proc.stderr
    assert "BRIDGE_RELAY_SECRET is not set" in proc.stderr and "ConfigurationError" in proc.stderr


def test_an_unreachable_redis_exits_5_naming_the_masked_url():
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    proc = subprocess.run([BRIDGE, "relay", "--port", str(free_port()), "--redis-url", url],
                          env=env(BRIDGE_RELAY_SECRET=SECRET), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5, proc.stderr
    assert url.replace(PASSWORD, "***") in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name, sig", [("relay", signal.SIGTERM), ("gateway", signal.SIGINT)])
def test_it_names_its_redis_serves_tokens_and_stops_cleanly(redis_with_password, name, sig):
    r = redis.Redis.from_url(redis_with_password)
    append(r, "t6", {"hello": "world"})
    finish(r, "t6")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([BRIDGE, name, "--port", str(port), "--redis-url", redis_with_password, "--webhooks"],
                            env=env(BRIDGE_RELAY_SECRET=SECRET), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # written once it listens
    token = stream_token("t6", secret=SECRET)
    try:
        assert proc.poll() is None, first + proc.stderr.read()
        assert redis_with_password.replace(PASSWORD, "***") in first and PASSWORD not in first
        assert f"bridge relay on {base}" in first and "token required" in first
        with urllib.request.urlopen(f"{base}/streams/t6?token={token}", timeout=10) as resp:
            text = resp.read().decode()
        assert 'event: chunk\ndata: {"hello": "world"}' in text and "event: end" in text
        for path, code in (("/streams/t6", 401), (f"/streams/t7?token={token}", 403)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{base}{path}", timeout=10)
            assert refused.value.code == code
        req = urllib.request.Request(f"{base}/webhooks/x?token=bad", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as forged:
            urllib.request.urlopen(req, timeout=10)
        assert forged.value.code == 403
        # An open event stream does not hold the stop up (the server ends its streams first).
        idle = urllib.request.urlopen(f"{base}/streams/idle?token={stream_token('idle', secret=SECRET)}",
                                      timeout=10)
        assert idle.status == 200
    finally:
        proc.send_signal(sig)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    idle.close()
    rest = proc.stderr.read() if proc.stderr else ""
    assert code == 0, rest
    assert token not in rest and PASSWORD not in rest and "Traceback" not in rest


def test_help_lists_relay_and_hides_the_old_name():
    out = subprocess.run([BRIDGE, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert " relay " in out and " gateway " not in out
    alias = subprocess.run([BRIDGE, "gateway", "--help"], capture_output=True, text=True, timeout=60)
    assert alias.returncode == 0 and "--open-streams" in alias.stdout
