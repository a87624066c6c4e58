"""A real runpod worker with an async handler: /cancel and executionTimeout reach it as
``asyncio.CancelledError`` through the job-stop long poll. Driven through bridge's asyncio
client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import bridge
from bridge import errors
from bridge.testing import LocalEndpoint

from .conftest import job_field, make_worker_endpoint, wait_ready, wait_until, worker_command


@pytest.fixture(scope="module")
def async_worker() -> Iterator[LocalEndpoint]:
    ep = make_worker_endpoint(worker_command("async_handler.py"), count=1, endpoint_id="async")
    try:
        wait_ready(ep, 1)
        yield ep
    finally:
        ep.close()


@pytest.fixture
def ready(async_worker: LocalEndpoint) -> Iterator[LocalEndpoint]:
    wait_ready(async_worker, 1)
    yield async_worker
    wait_ready(async_worker, 1)


async def test_async_handler_result(ready: LocalEndpoint) -> None:
    async with bridge.AsyncioEndpoint(ready.endpoint_id, base_url=ready.base_url) as endpoint:
        job = await endpoint.run({"op": "echo", "k": "v"})
        out = await job.output(timeout=30)
    assert out["echo"] == {"op": "echo", "k": "v"}


async def test_async_handler_exception_fails_the_job(ready: LocalEndpoint) -> None:
    async with bridge.AsyncioEndpoint(ready.endpoint_id, base_url=ready.base_url) as endpoint:
        job = await endpoint.run({"op": "raise", "message": "async boom"})
        with pytest.raises(errors.JobFailed) as info:
            await job.output(timeout=30)
    assert json.loads(info.value.error)["error_message"] == "async boom"


async def test_cancel_reaches_the_async_handler_as_cancelled_error(ready: LocalEndpoint, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    async with bridge.AsyncioEndpoint(ready.endpoint_id, base_url=ready.base_url) as endpoint:
        job = await endpoint.run({"op": "sleep", "seconds": 60, "marker": str(marker)})
        wait_until(lambda: job_field(ready, job.job_id) == "IN_PROGRESS", timeout=20)
        assert (await job.cancel())["status"] == "CANCELLED"
        # The handler saw CancelledError: it wrote the marker before re-raising.
        wait_until(marker.exists, timeout=10)
        assert marker.read_text() == job.job_id
        with pytest.raises(errors.JobCancelled):
            await job.output(timeout=5)
        # The worker is free again at once (not after the 60 s sleep).
        nxt = await endpoint.run({"op": "echo"})
        assert (await nxt.output(timeout=20))["echo"] == {"op": "echo"}


async def test_execution_timeout_stops_the_async_handler(ready: LocalEndpoint, tmp_path: Path) -> None:
    marker = tmp_path / "timed-out"
    async with bridge.AsyncioEndpoint(ready.endpoint_id, base_url=ready.base_url) as endpoint:
        job = await endpoint.run({"op": "sleep", "seconds": 60, "marker": str(marker)},
                                 policy={"executionTimeout": 500})
        with pytest.raises(errors.JobTimedOut):
            await job.output(timeout=30)
    wait_until(marker.exists, timeout=10)
    assert marker.read_text() == job.job_id
