"""Fixtures for the RabbitMQ broker tests: a private ``rabbitmq-server`` (rabbit_server.py)
with ``consumer_timeout`` 60 s, the suite's redis-server for the result backend and bridge's
keys, the local endpoint with the example handlers, and ``celery -A bridge.app worker``
subprocesses (tests/celery/celery_helpers.py) whose broker is the RabbitMQ node."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

# The worker-subprocess helpers live with the Celery tests (not a package): share them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "celery"))

from celery_helpers import Stack, WorkerProcess, make_app, serve_examples  # noqa: E402
from rabbit_server import RabbitMQServer  # noqa: E402

from bridge.embedded_redis import EmbeddedRedis  # noqa: E402
from bridge.gateway.core import reset_gateway  # noqa: E402


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQServer]:
    """One private RabbitMQ node for the session (started in ~3-5 s here)."""
    server = RabbitMQServer(consumer_timeout_ms=60_000).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rabbit_stack(rabbitmq: RabbitMQServer, redis_server: EmbeddedRedis) -> Iterator[Stack]:
    """A producer app whose broker is RabbitMQ and whose backend is Redis (db 11)."""
    url = f"redis://127.0.0.1:{redis_server.port}/11"
    client = redis.Redis.from_url(url)
    client.flushdb()
    with serve_examples() as ep, pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRIDGE_REDIS_URL", url)
        reset_gateway()
        app = make_app(url, "bridge-rabbit-producer", broker_url=rabbitmq.url)
        yield Stack(app, ep, url, client)
        reset_gateway()
    client.close()


@pytest.fixture
def rabbit_workers(rabbit_stack: Stack, rabbitmq: RabbitMQServer) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory of ``celery -A bridge.app worker`` subprocesses consuming from RabbitMQ."""
    started: list[WorkerProcess] = []

    def start(pool: str = "threads", concurrency: int = 100, **env: str) -> WorkerProcess:
        w = WorkerProcess(rabbit_stack.app, rabbit_stack.url, rabbit_stack.endpoint.base_url, pool,
                          concurrency, CELERY_BROKER_URL=rabbitmq.url, **env)
        started.append(w)
        return w.wait_ready()

    yield start
    for w in started:
        w.stop()
