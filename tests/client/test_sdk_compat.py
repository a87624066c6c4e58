"""The official ``runpod`` SDK (1.12.0), pointed at the local endpoint with
``runpod.endpoint_url_base`` and ``runpod.api_key``, works unchanged: the local endpoint
is RunPod's API, not one only our client understands.

The SDK polls with fixed 1 s sleeps, so these scenarios keep jobs short."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
import runpod

from bridge.testing import wait_until

from . import handlers

KEY = "rpa_SDKCOMPATKEY000001"


@pytest.fixture
def sdk_endpoint(local_endpoint, monkeypatch):
    """A local endpoint with an API key, and the SDK's module globals pointed at it."""

    def make(handler, **kwargs):
        local = local_endpoint(handler, api_key=KEY, **kwargs)
        monkeypatch.setattr(runpod, "endpoint_url_base", local.base_url)
        monkeypatch.setattr(runpod, "api_key", KEY)
        return local

    return make


def test_sdk_sync_run_status_output(sdk_endpoint):
    local = sdk_endpoint(handlers.work)
    ep = runpod.Endpoint(local.endpoint_id)
    job = ep.run({"input": {"x": 1}})
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert job.output(timeout=10) == {"echo": {"x": 1}}
    assert job.status() == "COMPLETED"
    # The plain-input form the SDK wraps itself.
    assert ep.run({"y": 2}).output(timeout=10) == {"echo": {"y": 2}}


def test_sdk_sync_run_sync_and_failure_shape(sdk_endpoint):
    local = sdk_endpoint(handlers.work)
    ep = runpod.Endpoint(local.endpoint_id)
    assert ep.run_sync({"input": {"z": 3}}, timeout=10) == {"echo": {"z": 3}}
    # The SDK's documented (mis)behaviour: a FAILED job's output is None, not an exception.
    assert ep.run_sync({"input": {"fail": "x"}}, timeout=10) is None


def test_sdk_sync_stream(sdk_endpoint):
    local = sdk_endpoint(handlers.sync_gen)
    ep = runpod.Endpoint(local.endpoint_id)
    job = ep.run({"input": {"n": 3}})
    assert list(job.stream()) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_sdk_sync_cancel_health_purge(sdk_endpoint):
    local = sdk_endpoint(handlers.work, workers=1)
    ep = runpod.Endpoint(local.endpoint_id)
    gate = f"g-{uuid.uuid4()}"
    running = ep.run({"input": {"gate": gate}})
    queued = [ep.run({"input": {"i": i}}) for i in range(2)]
    wait_until(lambda: running.status() == "IN_PROGRESS")
    health = ep.health()
    assert health["jobs"]["inQueue"] == 2 and health["jobs"]["inProgress"] == 1
    assert ep.purge_queue() == {"removed": 2, "status": "completed"}
    assert running.cancel() == {"id": running.job_id, "status": "CANCELLED"}
    assert running.status() == "CANCELLED"
    assert all(local.job_state(j.job_id) is None for j in queued)


def test_sdk_asyncio_run_status_output_stream_cancel(sdk_endpoint):
    local = sdk_endpoint(handlers.async_gen)
    local.add_endpoint("work", handlers.work)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ep = runpod.AsyncioEndpoint(local.endpoint_id, session)
            job = await ep.run({"n": 2})
            assert await job.status() in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
            assert [c async for c in job.stream()] == ["tok0", "tok1"]
            assert await job.output(timeout=10) == []

            work = runpod.AsyncioEndpoint("work", session)
            done = await work.run({"x": 1})
            assert await done.output(timeout=10) == {"echo": {"x": 1}}
            assert await done.status() == "COMPLETED"
            slow = await work.run({"sleep": 30})
            assert (await slow.cancel())["status"] == "CANCELLED"
            assert await slow.status() == "CANCELLED"
            assert (await work.health())["jobs"]["completed"] == 1
            assert (await work.purge_queue())["status"] == "completed"

    asyncio.run(scenario())


def test_sdk_reads_runpod_endpoint_base_url_from_the_environment(sdk_endpoint, tmp_path):
    """RUNPOD_ENDPOINT_BASE_URL is read when runpod is imported: a fresh interpreter."""
    import os
    import subprocess
    import sys

    local = sdk_endpoint(handlers.work)
    script = (
        "import runpod, json\n"
        f"runpod.api_key = {KEY!r}\n"
        f"print(json.dumps(runpod.Endpoint({local.endpoint_id!r}).run_sync({{'input': {{'e': 1}}}}, timeout=10)))\n"
    )
    env = {**os.environ, "RUNPOD_ENDPOINT_BASE_URL": local.base_url}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == '{"echo": {"e": 1}}'
