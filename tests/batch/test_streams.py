"""Reading task streams: several readers, a late joiner, offsets (the relay's SSE: tests/relay)."""

from __future__ import annotations

import asyncio
import json
import threading

import redis

from bridge import keys
from bridge.streams import aread_stream, read_stream


def append(r: redis.Redis, task_id: str, chunk: object) -> str:
    return r.xadd(keys.stream(task_id), {"chunk": json.dumps(chunk)}).decode()


def finish(r: redis.Redis, task_id: str, status: str = "COMPLETED", error: str | None = None) -> None:
    fields = {"eof": "1", "status": status}
    if error:
        fields["error"] = error
    r.xadd(keys.stream(task_id), fields)


def test_two_live_readers_and_a_late_joiner_see_every_chunk(redis_url):
    r = redis.Redis.from_url(redis_url)
    seen: dict[str, list] = {"a": [], "b": []}
    ready = threading.Barrier(3)

    def reader(name: str) -> None:
        events = read_stream("t1", redis_url=redis_url, timeout=10)
        ready.wait()
        for event in events:
            seen[name].append(event)

    threads = [threading.Thread(target=reader, args=(n,)) for n in seen]
    for t in threads:
        t.start()
    ready.wait()
    for i in range(50):
        append(r, "t1", {"i": i})
    finish(r, "t1", "FAILED", json.dumps({"error_message": "boom"}))
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    late = list(read_stream("t1", redis_url=redis_url, timeout=10))  # after the end: from the start
    for events in (seen["a"], seen["b"], late):
        assert [e.chunk for e in events[:-1]] == [{"i": i} for i in range(50)]
        assert events[-1].eof and events[-1].status == "FAILED"
        assert events[-1].error == {"error_message": "boom"}


def test_a_live_reader_outlasts_the_redis_socket_timeout(redis_url, monkeypatch):
    import bridge.streams

    monkeypatch.setattr(bridge.streams, "BLOCK_MS", 300)  # many idle blocks, quickly
    client = redis.Redis.from_url(redis_url, socket_timeout=1.0)  # a blocked read longer would fail
    events = read_stream("t5", client=client, timeout=10)
    r = redis.Redis.from_url(redis_url)
    done = threading.Event()

    def writer() -> None:
        done.wait(2.5)  # several idle blocks pass before anything is written
        append(r, "t5", "late")
        finish(r, "t5")

    threading.Thread(target=writer).start()
    got = list(events)
    assert [e.chunk for e in got[:-1]] == ["late"] and got[-1].eof


def test_offsets_and_non_live_reads(redis_url):
    r = redis.Redis.from_url(redis_url)
    ids = [append(r, "t2", i) for i in range(5)]
    now = list(read_stream("t2", redis_url=redis_url, live=False))
    assert [e.chunk for e in now] == [0, 1, 2, 3, 4]  # no eof yet: stops at the current end
    after = list(read_stream("t2", from_id=ids[2], redis_url=redis_url, live=False))
    assert [e.chunk for e in after] == [3, 4]
    finish(r, "t2")
    tail = list(read_stream("t2", from_id="$", redis_url=redis_url))
    assert len(tail) == 1 and tail[0].eof and tail[0].status == "COMPLETED"


async def test_async_reader_from_an_offset_then_live(redis_url):
    r = redis.Redis.from_url(redis_url)
    old = append(r, "t3", "old")
    append(r, "t3", "mid")
    got: list = []
    async for event in aread_stream("t3", from_id=old, redis_url=redis_url, timeout=10):
        got.append(event)
        if event.chunk == "mid":  # the reader is now live: the rest arrives while it waits
            await asyncio.to_thread(append, r, "t3", "new")
            await asyncio.to_thread(finish, r, "t3", "CANCELLED")
    assert [e.chunk for e in got[:-1]] == ["mid", "new"]
    assert got[-1].eof and got[-1].status == "CANCELLED"
