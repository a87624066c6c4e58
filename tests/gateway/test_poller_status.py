"""The gateway poller's status path against the local endpoint (its ``status_override``
fault reports a status outside RunPod's set): an unknown status ends the wait after
BRIDGE_UNKNOWN_STATUS_TIMEOUT, logged once with the job id, on long polls, plain polls and
stream polls; a bad setting fails the wait instead of leaving it hanging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge import errors
from bridge.gateway.poller import Poller
from bridge.gateway.settings import GatewaySettings
from bridge.gateway.transport import EndpointHandle, Transport


async def slow(job: dict[str, Any]) -> str:
    await asyncio.sleep(job["input"]["seconds"])
    return "done"


@pytest.fixture
async def rig(redis_url: str, local_endpoint: Callable[..., Any]) -> AsyncIterator[tuple[Poller, EndpointHandle, Any]]:
    ep = local_endpoint(slow, endpoint_id="ep", faults={"status_override": "WEIRD"})
    client = aioredis.Redis.from_url(redis_url)
    settings = GatewaySettings(rate_limits_env="", long_poll=1.0, poll_interval=0.1, poll_max_interval=0.3)
    transport = Transport(settings, client)
    poller = Poller(settings, transport, journal=None, redis=client)  # type: ignore[arg-type]
    yield poller, transport.endpoint("ep", ep.base_url), ep
    await transport.close()
    await client.aclose()


async def submit(poller: Poller, handle: EndpointHandle, seconds: float) -> str:
    body = await poller.transport.call(handle, handle.wire.run({"seconds": seconds}))
    assert body["status"] == "WEIRD"
    return str(body["id"])


def warnings_for(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and job_id in r.getMessage() and "not one of RunPod's" in r.getMessage()]


@pytest.mark.parametrize("long_poll", [1.0, 0.0], ids=["long-polls", "plain-polls"])
async def test_an_unknown_status_ends_the_wait_after_the_limit(
        rig: tuple[Poller, EndpointHandle, Any], long_poll: float, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    poller, handle, ep = rig
    poller.settings.long_poll = long_poll
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "0.6")
    job_id = await submit(poller, handle, 30)
    with pytest.raises(errors.UnknownStatus) as info:
        await asyncio.wait_for(poller.wait(handle, "t1", job_id), 20)
    assert (info.value.status, info.value.waited, info.value.job_id) == ("WEIRD", 0.6, job_id)
    assert len(warnings_for(caplog, job_id)) == 1
    assert ep.job_state(job_id)["status"] == "IN_PROGRESS"  # not cancelled
    assert not poller.watches


async def test_a_stream_showing_an_unknown_status_ends_too(
        rig: tuple[Poller, EndpointHandle, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    poller, handle, _ = rig
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "0.6")
    job_id = await submit(poller, handle, 30)
    chunks: list[Any] = []

    async def sink(batch: list[Any]) -> None:
        chunks.extend(batch)

    with pytest.raises(errors.UnknownStatus):
        await asyncio.wait_for(poller.wait(handle, "t2", job_id, sink=sink), 20)
    assert len(warnings_for(caplog, job_id)) == 1


async def test_an_unknown_status_that_ends_in_time_completes(
        rig: tuple[Poller, EndpointHandle, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    poller, handle, _ = rig
    poller.settings.long_poll = 0.0  # plain polls see the status while the job runs
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "30")
    job_id = await submit(poller, handle, 0.5)
    body = await asyncio.wait_for(poller.wait(handle, "t3", job_id), 20)
    assert body["status"] == "COMPLETED" and body["output"] == "done"
    assert len(warnings_for(caplog, job_id)) == 1


async def test_a_bad_limit_setting_fails_the_wait_instead_of_hanging(
        rig: tuple[Poller, EndpointHandle, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    poller, handle, _ = rig
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "soon")
    job_id = await submit(poller, handle, 30)
    with pytest.raises(errors.ConfigurationError, match="BRIDGE_UNKNOWN_STATUS_TIMEOUT"):
        await asyncio.wait_for(poller.wait(handle, "t4", job_id), 20)
