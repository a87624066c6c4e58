"""bridge's riding Redis clients against a redis-server (AOF) killed -9 and started again on
its port: a command, a journal claim and a pipeline issued while Redis is down complete once
it is back, on clients whose pooled connections went stale in the restart."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from fault_harness import FaultRedis

from bridge import redis_clients
from bridge.gateway.journal import Journal
from bridge.redis_clients import riding_async_client, riding_sync_client


@pytest.fixture
def server() -> Iterator[FaultRedis]:
    made = FaultRedis()
    yield made
    made.stop()


def test_a_sync_command_issued_while_redis_is_down_completes_once_it_is_back(server: FaultRedis) -> None:
    client = riding_sync_client(server.url)
    client.set("k", "before")  # persisted (AOF always), and a pooled connection left behind
    server.kill()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(client.get("k")))
    reader.start()  # refused, retried with backoff while Redis is down
    server.restart()
    reader.join(30)
    assert got == [b"before"]
    client.close()


async def test_a_claim_and_a_record_through_a_restart(server: FaultRedis) -> None:
    client = riding_async_client(server.url, max_connections=4)
    journal = Journal(client, 3600)
    assert await journal.claim("t-1", "ep", "http://x/v2", "pid-1", 60) == ("claimed", None)
    server.kill()
    claim = asyncio.ensure_future(journal.claim("t-1", "ep", "http://x/v2", "pid-1", 60))
    record = asyncio.ensure_future(journal.record("t-2", "job-2"))
    # the outage was seen (its one warning is due) and both are still being retried
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while server.url not in redis_clients._outages._since:
        assert loop.time() < deadline, "no attempt met the refused port"
        await asyncio.sleep(0.01)  # polling with a deadline
    assert not claim.done() and not record.done()
    await asyncio.get_running_loop().run_in_executor(None, server.restart)
    assert await asyncio.wait_for(claim, 30) == ("claimed", None)  # its own claim, from the AOF
    await asyncio.wait_for(record, 30)
    assert (await journal.get("t-2"))["job_id"] == "job-2"
    await client.aclose()
