"""StreamHub: one XREAD loop for every stream; late joiners, Redis outages, a non-stream key."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
import redis

from bridge import keys
from bridge.embedded_redis import EmbeddedRedis
from bridge.stream_hub import StreamHub, Subscription, masked_url
from bridge.streams import StreamEvent
from bridge.testing.waiting import wait_until

from .conftest import append, finish


async def drain(sub: Subscription, timeout: float = 10) -> list[StreamEvent]:
    """Every event up to the end (fails the test past ``timeout`` s without one)."""
    got: list[StreamEvent] = []
    while True:
        event = await sub.get(timeout)
        assert event is not None, f"no event within {timeout} s after {len(got)}"
        got.append(event)
        if event.eof:
            return got


@pytest.fixture(params=["tracking", "xread"])
def mode(request) -> str:
    """Both ways the hub learns what moved: Redis's key tracking, or one XREAD over all."""
    return request.param


async def test_a_joiner_from_the_start_gets_backlog_then_live_without_gaps_or_repeats(redis_url, mode):
    r = redis.Redis.from_url(redis_url)
    hub = StreamHub(redis_url, tracking=mode == "tracking")
    await hub.start()
    try:
        first = await hub.subscribe("t", "0")
        writes = 0

        async def writer() -> None:
            nonlocal writes
            for i in range(200):
                await asyncio.to_thread(append, r, "t", i)
                writes += 1
            await asyncio.to_thread(finish, r, "t")

        task = asyncio.ensure_future(writer())
        seen_first = [await first.get(10) for _ in range(50)]  # the shared loop is well under way
        late = await hub.subscribe("t", "0")
        resume = await hub.subscribe("t", seen_first[9].id)  # a reconnect after the 10th chunk
        await task
        rest_first = await drain(first)
        got_late = await drain(late)
        got_resume = await drain(resume)
        expected = list(range(200))
        assert [e.chunk for e in seen_first + rest_first[:-1]] == expected
        assert [e.chunk for e in got_late[:-1]] == expected
        assert [e.chunk for e in got_resume[:-1]] == expected[10:]
        assert all(g[-1].eof and g[-1].status == "COMPLETED" for g in (rest_first, got_late, got_resume))
        assert hub.watched == 0  # an ended stream leaves the loop
        assert hub.mode == mode
    finally:
        await hub.close()


async def test_many_streams_share_a_few_connections(redis_url, mode):
    r = redis.Redis.from_url(redis_url)
    before = len(r.client_list())
    hub = StreamHub(redis_url, tracking=mode == "tracking")
    await hub.start()
    try:
        subs = [await hub.subscribe(f"s{i}") for i in range(200)]
        pipe = r.pipeline(transaction=False)
        for i in range(200):
            pipe.xadd(keys.stream(f"s{i}"), {"chunk": json.dumps(i)})
            pipe.xadd(keys.stream(f"s{i}"), {"eof": "1", "status": "COMPLETED"})
        pipe.execute()
        results = await asyncio.gather(*(drain(s) for s in subs))
        assert [g[0].chunk for g in results] == list(range(200))
        # 200 streams: the loop's connection(s) and a few short-command ones, not one each.
        assert len(r.client_list()) - before <= 4
        # Each read covered many streams at once.
        assert hub.reads < 100
    finally:
        await hub.close()


async def test_readers_wait_through_a_redis_outage_and_resume(caplog, mode):
    caplog.set_level(logging.INFO, logger="bridge.relay")
    server = EmbeddedRedis(require_real=True).start()
    hub = StreamHub(server.url, block_ms=300, tracking=mode == "tracking")
    await hub.start()
    try:
        sub = await hub.subscribe("o")
        r = redis.Redis.from_url(server.url)
        append(r, "o", "before")
        assert (await sub.get(10)).chunk == "before"
        server.stop()
        # Nothing to read while Redis is away: the reader waits (no error, no end).
        assert await sub.get(1.0) is None and sub.dropped is None
        server = EmbeddedRedis(require_real=True, port=server.port).start()  # same address, empty
        r = redis.Redis.from_url(server.url)
        append(r, "o", "after")
        finish(r, "o")
        got = await drain(sub, 15)
        assert [e.chunk for e in got[:-1]] == ["after"] and got[-1].eof
        warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert sum("unreachable" in w for w in warnings) == 1  # one line per outage
        assert any("reachable again" in w for w in warnings)
        assert not any(rec.exc_info for rec in caplog.records)  # no tracebacks
    finally:
        await hub.close()
        server.stop()


async def test_a_key_that_is_not_a_stream_drops_only_its_readers(redis_url, mode):
    r = redis.Redis.from_url(redis_url)
    r.set(keys.stream("wrong"), "a string, not a stream")
    hub = StreamHub(redis_url, tracking=mode == "tracking")
    await hub.start()
    try:
        good = await hub.subscribe("good")
        bad = await hub.subscribe("wrong")
        append(r, "good", 1)
        finish(r, "good")
        assert [e.chunk for e in (await drain(good))[:-1]] == [1]
        assert await bad.get(5) is None and bad.dropped and "not a stream" in bad.dropped
    finally:
        await hub.close()


def test_a_reader_that_falls_too_far_behind_is_dropped(monkeypatch):
    import bridge.stream_subscription

    monkeypatch.setattr(bridge.stream_subscription, "MAX_QUEUED", 3)
    sub = Subscription("t", "0")
    for i in range(1, 6):
        sub.push(StreamEvent(f"{i}-0", chunk=i))
    assert sub.dropped == "the client reads too slowly"
    sub.push(StreamEvent("1-0", chunk="again"))  # ids at or before the last one are never repeated
    assert [e.chunk for e in sub._items] == [1, 2, 3, 4]


@pytest.mark.parametrize("raw, shown", [
    ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://user:s3cret@host/1", "redis://user:***@host/1"),
    ("redis://host:6379/0", "redis://host:6379/0"),
])
def test_masked_url(raw, shown):
    assert masked_url(raw) == shown


async def test_without_key_tracking_the_hub_falls_back_to_one_xread(redis_url, caplog):
    # A user whose ACL forbids CLIENT TRACKING (as some managed Redis do): streams still flow.
    caplog.set_level(logging.INFO, logger="bridge.relay")
    admin = redis.Redis.from_url(redis_url)
    user = f"relay-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(user, enabled=True, passwords=["+pw-for-the-test"], keys=["*"], channels=["*"],
                      commands=["+@all", "-client|tracking"])
    url = redis_url.replace("redis://", f"redis://{user}:pw-for-the-test@")
    hub = StreamHub(url)
    await hub.start()
    try:
        sub = await hub.subscribe("fb")
        await asyncio.to_thread(wait_until, lambda: hub.mode == "xread", 10)
        assert "cannot track keys" in caplog.text
        append(admin, "fb", "x")  # live, through the fallback loop
        finish(admin, "fb")
        assert [e.chunk for e in (await drain(sub))[:-1]] == ["x"]
    finally:
        await hub.close()
        admin.acl_deluser(user)
