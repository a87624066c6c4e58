"""Shared fixtures. Area-specific fixtures live in each tests/<area>/conftest.py.

- ``redis_server``: a real ``redis-server`` on a free loopback port for the whole session.
- ``redis_url``: a fresh, flushed database of that server for one test.
- the local endpoint fixtures come from ``bridge.testing`` (the pytest plugin users get too).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from bridge.embedded_redis import EmbeddedRedis

pytest_plugins = ["bridge.testing.pytest_plugin"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(require_real=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
