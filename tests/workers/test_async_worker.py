"""A real runpod worker with an async handler run at concurrency 3 (so the SDK uses
job-take-batch): /cancel and executionTimeout reach each job as ``asyncio.CancelledError``
through the job-stop long poll. Driven through bridge's asyncio client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import bridge
from bridge import errors
from bridge.testing import LocalEndpoint

from .conftest import holder, job_field, make_worker_endpoint, runner, wait_ready, wait_until, worker_command


@pytest.fixture(scope="module")
def async_worker() -> Iterator[LocalEndpoint]:
    ep = make_worker_endpoint(worker_command("async_handler.py", "--concurrency", "3"), count=1, endpoint_id="async")
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


async def test_one_worker_runs_several_jobs_at_once_and_stops_each_alone(ready: LocalEndpoint, tmp_path: Path) -> None:
    async with bridge.AsyncioEndpoint(ready.endpoint_id, base_url=ready.base_url) as endpoint:
        jobs = [await endpoint.run({"op": "sleep", "seconds": 60, "marker": str(tmp_path / f"m{i}")})
                for i in range(3)]
        # All three run at once, on the one worker process.
        wait_until(lambda: all(job_field(ready, j.job_id) == "IN_PROGRESS" for j in jobs), timeout=20)
        assert len({holder(ready, j.job_id) for j in jobs}) == 1
        assert runner(ready).host.route_counts["job-take-batch"] >= 1
        assert ready.health()["workers"]["running"] == 1
        # Stopping one leaves the other two running.
        await jobs[0].cancel()
        wait_until((tmp_path / "m0").exists, timeout=10)
        assert [job_field(ready, j.job_id) for j in jobs[1:]] == ["IN_PROGRESS", "IN_PROGRESS"]
        assert not (tmp_path / "m1").exists()
        for job in jobs[1:]:
            await job.cancel()
        wait_until(lambda: (tmp_path / "m1").exists() and (tmp_path / "m2").exists(), timeout=10)
