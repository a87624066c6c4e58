"""The asyncio client used the way users write asyncio code (no facade): sessions it owns
or borrows, no timeout needed, many concurrent waits at about one request each."""

from __future__ import annotations

import asyncio

import aiohttp

import bridge
from bridge import errors

from . import handlers


async def test_owned_session_is_made_in_the_loop_and_closed(local_endpoint):
    local = local_endpoint(handlers.work)
    async with bridge.AsyncioEndpoint(local.endpoint_id, base_url=local.base_url) as ep:
        job = await ep.run({"sleep": 0.3})
        assert await job.output() == {"echo": {"sleep": 0.3}}  # no timeout needed
        session = ep.session
        assert not session.closed
    assert session.closed


async def test_borrowed_session_is_left_open(local_endpoint):
    local = local_endpoint(handlers.work)
    async with aiohttp.ClientSession() as session:
        ep = bridge.AsyncioEndpoint(local.endpoint_id, session, base_url=local.base_url)
        assert await ep.run_sync({"a": 1}) == {"echo": {"a": 1}}
        await ep.close()
        assert not session.closed
        assert ep.session is session


async def test_many_concurrent_waits_cost_about_one_request_each(local_endpoint):
    local = local_endpoint(handlers.work, workers=200)
    async with bridge.AsyncioEndpoint(local.endpoint_id, base_url=local.base_url) as ep:
        jobs = await asyncio.gather(*(ep.run({"i": i, "sleep": 1.0}) for i in range(200)))
        outputs = await asyncio.gather(*(job.output(timeout=30) for job in jobs))
    assert outputs == [{"echo": {"i": i, "sleep": 1.0}} for i in range(200)]
    stats = local.stats()
    assert stats["run"] == 200
    assert stats.get("status", 0) == 0 and stats["status-sync"] <= 220
    assert ep.requests_sent == sum(stats.values())


async def test_typed_errors_and_stream_in_asyncio(local_endpoint):
    local = local_endpoint(handlers.async_gen)
    async with bridge.AsyncioEndpoint(local.endpoint_id, base_url=local.base_url) as ep:
        job = await ep.run({"n": 2, "fail": True})
        chunks = []
        try:
            async for chunk in job.stream():
                chunks.append(chunk)
        except errors.JobFailed as exc:
            assert exc.job_id == job.job_id
        else:
            raise AssertionError("stream of a failed job must raise")
        assert chunks == ["tok0", "tok1"]
