"""The embedded Redis behind the README's main command: real binary first, fakeredis else."""

from __future__ import annotations

import pytest
import redis

from bridge.embedded_redis import EmbeddedRedis


@pytest.mark.parametrize("fake", [False, True], ids=["redis-server", "fakeredis"])
def test_embedded_redis_serves_on_loopback_and_stops(fake: bool) -> None:
    server = EmbeddedRedis(fake=fake).start()
    try:
        assert server.kind == ("fakeredis" if fake else "redis-server")
        assert server.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.xadd("s", {"chunk": "1"})
        assert client.xlen("s") == 1
        client.close()
    finally:
        server.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()
