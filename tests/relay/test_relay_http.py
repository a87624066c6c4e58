"""The relay's GET /streams/{task_id}: tokens, resume, many readers on one Redis reader."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import aiohttp
import pytest
import redis

import bridge.sse
from bridge.errors import ConfigurationError
from bridge.sse import HUB_KEY, make_app
from bridge.stream_tokens import stream_token

from .conftest import SECRET, append, chunks, finish, read_sse


def url(relay, task_id: str, token: str | None = None, **query: str) -> str:
    params = dict(query)
    if token is not None:
        params["token"] = token
    text = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{relay.url}/streams/{task_id}" + (f"?{text}" if text else "")


@pytest.mark.parametrize("case, status", [
    ("none", 401), ("expired", 403), ("forged", 403), ("other task", 403), ("other secret", 403), ("garbage", 403),
])
async def test_unauthorised_expired_and_forged_reads_are_refused(relay, redis_url, caplog, case, status):
    caplog.set_level(logging.INFO)
    r = redis.Redis.from_url(redis_url)
    append(r, "secret-task", {"leak": "SEKRIT-CHUNK"})
    finish(r, "secret-task", "FAILED", json.dumps({"error_message": "SEKRIT-ERROR"}))
    token = {
        "none": None,
        "expired": stream_token("secret-task", ttl=60, secret=SECRET, now=1_000_000),
        "forged": stream_token("secret-task", secret=SECRET)[:-4] + "AAAA",
        "other task": stream_token("another-task", secret=SECRET),
        "other secret": stream_token("secret-task", secret="some-other-secret-value"),
        "garbage": "not-a-token",
    }[case]
    async with aiohttp.ClientSession() as session:
        async with session.get(url(relay, "secret-task", token)) as resp:
            body = await resp.text()
            assert resp.status == status
            assert resp.headers["Content-Type"].startswith("application/json")
    assert "SEKRIT" not in body and "bridge.stream_token" in body
    if token:
        assert token not in caplog.text  # access log lines carry no query string


async def test_a_valid_token_relays_and_resumes_with_last_event_id(relay, redis_url):
    r = redis.Redis.from_url(redis_url)
    for i in range(10):
        append(r, "t4", {"i": i})
    link = url(relay, "t4", stream_token("t4", secret=SECRET))
    async with aiohttp.ClientSession() as session:
        async with session.get(link) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            first = await read_sse(resp, limit=4)  # then the "browser" drops the connection
        assert chunks(first) == [{"i": i} for i in range(4)]
        for i in range(10, 15):
            append(r, "t4", {"i": i})
        end_id = finish(r, "t4")
        async with session.get(link, headers={"Last-Event-ID": first[-1]["id"]}) as resp:
            rest = await read_sse(resp)
        assert chunks(rest) == [{"i": i} for i in range(4, 15)]
        assert rest[-1]["event"] == "end" and json.loads(rest[-1]["data"])["status"] == "COMPLETED"
        async with session.get(link + f"&from={first[1]['id']}") as resp:  # ?from= for header-less clients
            assert chunks(await read_sse(resp)) == [{"i": i} for i in range(2, 15)]
        # An EventSource reconnecting after the end gets 204, which stops its reconnects.
        async with session.get(link, headers={"Last-Event-ID": end_id}) as resp:
            assert resp.status == 204
        async with session.get(link, headers={"Last-Event-ID": "not-an-id"}) as resp:
            assert resp.status == 400


def redis_clients(r: redis.Redis) -> int:
    return len(r.client_list())


async def test_idle_readers_do_not_block_a_live_one_and_share_one_redis_reader(relay, redis_url):
    r = redis.Redis.from_url(redis_url)
    before = redis_clients(r)
    idle = [uuid.uuid4().hex for _ in range(300)]  # streams nobody writes: each used to hold a connection
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        responses = await asyncio.gather(*(session.get(url(relay, t, stream_token(t, secret=SECRET))) for t in idle))
        try:
            assert all(resp.status == 200 for resp in responses)
            link = url(relay, "live", stream_token("live", secret=SECRET))
            async with session.get(link) as resp:
                for i in range(5):
                    append(r, "live", i)
                finish(r, "live")
                events = await asyncio.wait_for(read_sse(resp), 10)
            assert chunks(events) == [0, 1, 2, 3, 4] and events[-1]["event"] == "end"
            # 301 open streams; the relay added one blocked reader and a few short-command connections.
            from bridge.stream_hub import POOL_SIZE

            assert redis_clients(r) - before <= 1 + POOL_SIZE
            assert relay.runner.app[HUB_KEY].watched == 300
        finally:
            for resp in responses:
                resp.close()


def test_the_stream_routes_need_a_secret_unless_open(monkeypatch, redis_url):
    monkeypatch.delenv("BRIDGE_RELAY_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="BRIDGE_RELAY_SECRET"):
        make_app(redis_url)
    make_app(redis_url, open_streams=True)  # the documented opt-out


async def test_open_streams_serve_without_a_token(redis_url):
    from bridge.testing import AppServer

    r = redis.Redis.from_url(redis_url)
    append(r, "open", "x")
    finish(r, "open")
    with AppServer(make_app(redis_url, open_streams=True)) as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/streams/open") as resp:
                assert chunks(await read_sse(resp)) == ["x"]



async def test_idle_streams_get_keep_alive_comments(redis_url, monkeypatch):
    from bridge.testing import AppServer

    monkeypatch.setattr(bridge.sse, "HEARTBEAT", 0.2)
    with AppServer(make_app(redis_url, secret=SECRET)) as server:
        async with aiohttp.ClientSession() as session:
            link = f"{server.url}/streams/quiet?token={stream_token('quiet', secret=SECRET)}"
            async with session.get(link) as resp:
                lines = []
                while len([x for x in lines if x == b": keep-alive\n"]) < 2:
                    lines.append(await asyncio.wait_for(resp.content.readline(), 10))
    assert lines[0] == b"retry: 2000\n"
