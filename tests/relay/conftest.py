"""Fixtures for the relay tests: a relay on 127.0.0.1 over the test Redis, stream writers, an
SSE parser."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest
import redis

from bridge import keys
from bridge.sse import make_app
from bridge.testing import AppServer
from bridge.webhooks.receiver import SafeAccessLogger

SECRET = "test-relay-secret-0123456789"


def append(r: redis.Redis, task_id: str, chunk: object) -> str:
    return r.xadd(keys.stream(task_id), {"chunk": json.dumps(chunk)}).decode()


def finish(r: redis.Redis, task_id: str, status: str = "COMPLETED", error: str | None = None) -> str:
    fields = {"eof": "1", "status": status}
    if error:
        fields["error"] = error
    return r.xadd(keys.stream(task_id), fields).decode()


async def read_sse(resp: aiohttp.ClientResponse, limit: int | None = None) -> list[dict]:
    """Parse events until ``limit`` events (or the end event, or the end of the response)."""
    events: list[dict] = []
    current: dict = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in current:
                events.append(current)
                if current.get("event") == "end" or (limit and len(events) >= limit):
                    return events
            current = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        current[field] = value
    return events


def chunks(events: list[dict]) -> list:
    return [json.loads(e["data"]) for e in events if e.get("event") == "chunk"]


@pytest.fixture
def relay(redis_url: str) -> Iterator[AppServer]:
    """The relay's stream routes, tokens required (secret :data:`SECRET`)."""
    server = AppServer(make_app(redis_url, secret=SECRET), access_log_class=SafeAccessLogger)
    yield server
    server.close()
