"""The official runpod SDK client (runpod.Endpoint / AsyncioEndpoint) against the local
endpoint while real runpod workers run the jobs: both ends are RunPod's own code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import runpod

from bridge.testing import LocalEndpoint

from .conftest import wait_until


@pytest.fixture
def sdk(idle_sync_worker: LocalEndpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[runpod.Endpoint]:
    monkeypatch.setattr(runpod, "endpoint_url_base", idle_sync_worker.base_url)
    monkeypatch.setattr(runpod, "api_key", "unused-locally")
    yield runpod.Endpoint(idle_sync_worker.endpoint_id)


def test_sdk_run_sync(sdk: runpod.Endpoint) -> None:
    out = sdk.run_sync({"input": {"op": "echo", "via": "sdk"}}, timeout=30)
    assert out["echo"] == {"op": "echo", "via": "sdk"}


def test_sdk_run_status_output(sdk: runpod.Endpoint) -> None:
    job = sdk.run({"input": {"op": "echo", "n": 7}})
    assert job.output(timeout=30)["echo"] == {"op": "echo", "n": 7}
    assert job.status() == "COMPLETED"


def test_sdk_sees_failed_job(sdk: runpod.Endpoint) -> None:
    job = sdk.run({"input": {"op": "raise"}})
    wait_until(lambda: job.status() == "FAILED", timeout=30)
    assert job.output() is None  # the SDK drops `error` (reference §7); the status says FAILED


def test_sdk_cancel_and_health(sdk: runpod.Endpoint, tmp_path: Path) -> None:
    release = tmp_path / "release"
    job = sdk.run({"input": {"op": "progress", "value": "working", "release": str(release)}})
    wait_until(lambda: job.status() == "IN_PROGRESS", timeout=30)
    health = sdk.health()
    assert health["jobs"]["inProgress"] == 1 and health["workers"]["running"] == 1
    assert job.cancel()["status"] == "CANCELLED"
    release.touch()
    assert job.status() == "CANCELLED"


async def test_sdk_asyncio_endpoint(idle_sync_worker: LocalEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runpod, "endpoint_url_base", idle_sync_worker.base_url)
    monkeypatch.setattr(runpod, "api_key", "unused-locally")
    from runpod.http_client import AsyncClientSession

    async with AsyncClientSession() as session:
        endpoint = runpod.AsyncioEndpoint(idle_sync_worker.endpoint_id, session)
        job = await endpoint.run({"op": "echo", "a": 1})
        out = await job.output(timeout=30)
    assert out["echo"] == {"op": "echo", "a": 1}
