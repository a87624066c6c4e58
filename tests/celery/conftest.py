"""Fixtures for the Celery gateway tests (helpers in celery_helpers.py): a real redis-server,
a real local endpoint with the example handlers, an embedded threads worker or worker
subprocesses."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery_helpers import (
    GATEWAY_ENV,
    WRONG_KEY,
    GarbageServer,
    Stack,
    WorkerProcess,
    make_app,
    serve_examples,
)

from bridge.embedded_redis import EmbeddedRedis, free_port
from bridge.gateway.core import reset_gateway


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis) -> Iterator[Stack]:
    """An embedded threads worker of an app with ``bridge.install``, on its own Redis db."""
    url = f"redis://127.0.0.1:{redis_server.port}/3"
    client = redis.Redis.from_url(url)
    client.flushdb()
    garbage = GarbageServer()
    named = {
        "badkey": {"endpoint_id": "echo", "api_key_env": "BRIDGE_TEST_WRONG_KEY"},
        "down": {"endpoint_id": "echo", "base_url": f"http://127.0.0.1:{free_port()}/v2"},
        "garbage": {"base_url": garbage.base_url},
    }
    with serve_examples() as ep, pytest.MonkeyPatch.context() as mp:
        for key, value in {**GATEWAY_ENV, "BRIDGE_REDIS_URL": url, "BRIDGE_TEST_WRONG_KEY": WRONG_KEY,
                           "BRIDGE_ENDPOINTS": json.dumps(named),
                           "RUNPOD_ENDPOINT_BASE_URL": ep.base_url}.items():
            mp.setenv(key, value)
        reset_gateway()
        app = make_app(url)
        with start_worker(app, pool="threads", concurrency=200, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=15):
            yield Stack(app, ep, url, client)
        reset_gateway()
    garbage.close()
    client.close()


@pytest.fixture(scope="module")
def sub_stack(redis_server: EmbeddedRedis) -> Iterator[Stack]:
    """A producer app and local endpoint for tests that start worker subprocesses."""
    url = f"redis://127.0.0.1:{redis_server.port}/4"
    client = redis.Redis.from_url(url)
    client.flushdb()
    with serve_examples() as ep, pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRIDGE_REDIS_URL", url)
        reset_gateway()
        app = make_app(url, "bridge-producer")
        yield Stack(app, ep, url, client)
        reset_gateway()
    client.close()


@pytest.fixture
def workers(sub_stack: Stack) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory of worker subprocesses; all are stopped when the test ends."""
    started: list[WorkerProcess] = []

    def start(pool: str = "threads", concurrency: int = 100, app_module: str = "bridge.app",
              app: Celery | None = None, **env: str) -> WorkerProcess:
        """``app``: the producer app on the worker's broker (pings, inspect); default sub_stack's."""
        w = WorkerProcess(app or sub_stack.app, sub_stack.url, sub_stack.endpoint.base_url, pool, concurrency,
                          app_module, **env)
        started.append(w)
        return w.wait_ready()

    yield start
    for w in started:
        w.stop()
