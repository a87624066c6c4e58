"""bridge.redis_clients against a real redis-server that the tests kill -9 and restart on
the same port: clients made before the restart keep working, an operation issued during a
short outage completes once Redis is back (one warning per outage, however many wait),
and one whose outage budget runs out fails with RedisUnavailable naming the masked URL."""

from __future__ import annotations

import asyncio
import logging
import pickle
import signal
import threading
from collections.abc import Iterator

import pytest
import redis

from bridge import redis_clients
from bridge.embedded_redis import EmbeddedRedis
from bridge.errors import ConfigurationError, RedisUnavailable
from bridge.redis_clients import async_client, athrough_outage, outage_seconds, sync_client, through_outage
from bridge.testing.waiting import wait_until


class RestartableRedis:
    """A redis-server on a fixed port that can die (kill -9) and come back on that port."""

    def __init__(self) -> None:
        self.server = EmbeddedRedis(require_real=True).start()
        self.port = self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def kill9(self) -> None:
        proc = self.server._proc  # the child EmbeddedRedis started
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.server.stop()  # removes its directory; the process is already gone

    def restart(self) -> None:
        self.server = EmbeddedRedis(require_real=True, port=self.port).start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def restartable() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def outage_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="bridge.redis")
    return caplog


def _unreachable_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is unreachable" in r.getMessage()]


def test_a_sync_client_made_before_a_restart_works_after_it(restartable: RestartableRedis) -> None:
    client = sync_client(restartable.url)
    client.set("k", "before")
    pool_connections = list(client.connection_pool._available_connections)
    assert pool_connections, "the command left a pooled connection behind"
    restartable.kill9()
    restartable.restart()
    # the pooled connection is stale (its server died); it is found and replaced, not raised
    assert client.get("k") is None  # a new, empty server (no persistence)
    client.set("k", "after")
    assert client.get("k") == b"after"
    client.close()


async def test_an_async_client_made_before_a_restart_works_after_it(restartable: RestartableRedis) -> None:
    client = async_client(restartable.url, max_connections=4)
    await client.set("k", "before")
    await asyncio.to_thread(restartable.kill9)
    await asyncio.to_thread(restartable.restart)
    assert await client.get("k") is None
    await client.set("k", "after")
    assert await client.get("k") == b"after"
    await client.aclose()


def test_operations_during_a_short_outage_complete_once_redis_is_back(
    restartable: RestartableRedis, outage_log: pytest.LogCaptureFixture
) -> None:
    client = sync_client(restartable.url)
    client.ping()
    restartable.kill9()
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        def op() -> object:
            client.set(f"k{i}", i)
            return client.get(f"k{i}")

        try:
            results[i] = through_outage(op, restartable.url, outage=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    # every operation is retrying (the outage was logged) before Redis comes back
    wait_until(lambda: _unreachable_warnings(outage_log), 10)
    assert not results and not errors
    restartable.restart()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert results == {i: str(i).encode() for i in range(5)}
    assert len(_unreachable_warnings(outage_log)) == 1  # once per outage, not per command
    assert any("answers again" in r.getMessage() for r in outage_log.records)
    client.close()


async def test_an_async_operation_during_a_short_outage_completes_once_redis_is_back(
    restartable: RestartableRedis, outage_log: pytest.LogCaptureFixture
) -> None:
    client = async_client(restartable.url)
    await client.ping()
    await asyncio.to_thread(restartable.kill9)
    pending = asyncio.ensure_future(athrough_outage(lambda: client.incr("n"), restartable.url, outage=60))
    await asyncio.to_thread(wait_until, lambda: _unreachable_warnings(outage_log), 10)
    assert not pending.done()
    await asyncio.to_thread(restartable.restart)
    assert await asyncio.wait_for(pending, 30) == 1
    await client.aclose()


def test_an_outage_longer_than_the_budget_fails_with_a_typed_error_and_no_password(
    restartable: RestartableRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"redis://:s3cretpw@127.0.0.1:{restartable.port}/0"
    client = sync_client(url)
    restartable.kill9()
    monkeypatch.setenv("BRIDGE_REDIS_OUTAGE", "0.5")
    with pytest.raises(RedisUnavailable) as info:
        through_outage(client.ping, url)
    err = info.value
    assert err.outage == 0.5
    assert err.url == f"redis://:***@127.0.0.1:{restartable.port}/0"
    text = str(err)
    assert err.url in text and "0.5 s" in text and "BRIDGE_REDIS_OUTAGE" in text
    assert "s3cretpw" not in text and "s3cretpw" not in repr(err.args)
    assert pickle.loads(pickle.dumps(err)).args == err.args
    assert isinstance(err.__cause__, redis.exceptions.ConnectionError)
    client.close()


async def test_an_async_outage_longer_than_the_budget_fails_with_a_typed_error(
    restartable: RestartableRedis,
) -> None:
    client = async_client(restartable.url)
    await asyncio.to_thread(restartable.kill9)
    with pytest.raises(RedisUnavailable, match="stayed unreachable for 0.3 s"):
        await athrough_outage(client.ping, restartable.url, outage=0.3)
    await client.aclose()


def test_errors_that_waiting_does_not_cure_are_raised_at_once(
    redis_url: str, outage_log: pytest.LogCaptureFixture
) -> None:
    client = sync_client(redis_url)
    client.set("text", "not a number")
    calls = []

    def incr() -> int:
        calls.append(1)
        return int(client.incr("text"))

    with pytest.raises(redis.exceptions.ResponseError):
        through_outage(incr, redis_url, outage=60)
    assert len(calls) == 1 and not _unreachable_warnings(outage_log)
    client.close()


def test_the_outage_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_REDIS_OUTAGE", raising=False)
    assert outage_seconds() == 300.0
    monkeypatch.setenv("BRIDGE_REDIS_OUTAGE", "12.5")
    assert outage_seconds() == 12.5
    monkeypatch.setenv("BRIDGE_REDIS_OUTAGE", "soon")
    with pytest.raises(ConfigurationError, match="BRIDGE_REDIS_OUTAGE"):
        outage_seconds()


def test_clients_check_idle_connections_and_keep_them_alive(redis_url: str) -> None:
    kwargs = sync_client(redis_url).connection_pool.connection_kwargs
    assert kwargs["health_check_interval"] == redis_clients.HEALTH_CHECK_INTERVAL
    assert kwargs["socket_keepalive"] is True
    assert set(kwargs["retry_on_error"]) >= {redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                                             redis.exceptions.BusyLoadingError}


def test_the_result_backend_retries_through_an_outage() -> None:
    from celery import Celery

    from bridge import celery_settings

    assert celery_settings.result_backend_always_retry is True
    # backoff averages 5 s once ramped up: the retries cover BRIDGE_REDIS_OUTAGE
    assert celery_settings.result_backend_max_retries * 5 >= outage_seconds()
    assert redis_clients.backend_retry_missing(Celery("plain", set_as_current=False).conf) == [
        "result_backend_always_retry"
    ]
