"""The lifecycle's wait, as the gateway drives it (its budgeted transport), against the
local endpoint (its ``status_override`` fault reports a status outside RunPod's set): an
unknown status ends the wait after BRIDGE_UNKNOWN_STATUS_TIMEOUT, logged once with the job
id, on long polls, plain polls and stream polls; a bad setting fails the wait instead of
leaving it hanging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge import errors
from bridge.gateway.settings import GatewaySettings
from bridge.gateway.transport import EndpointHandle, Transport
from bridge.lifecycle import plans
from bridge.lifecycle.clocks import WaitClock
from bridge.lifecycle.drive import AsyncDriver
from bridge.lifecycle.schedule import profiles
from bridge.lifecycle.settings import PollPolicy, WaitSettings


async def slow(job: dict[str, Any]) -> str:
    await asyncio.sleep(job["input"]["seconds"])
    return "done"


class Rig:
    def __init__(self, transport: Transport, base_url: str) -> None:
        self.transport = transport
        self.base_url = base_url

    def handle(self, long_poll: float = 1.0) -> EndpointHandle:
        profiles.clear()  # each test learns afresh whether long polls work
        self.transport.settings.waits = WaitSettings(
            poll=PollPolicy(long_poll=long_poll, initial=0.1, max_interval=0.3), learn=False)
        self.transport._endpoints.clear()
        return self.transport.endpoint("ep", self.base_url)

    async def submit(self, handle: EndpointHandle, seconds: float) -> str:
        body = await self.transport.call(handle, handle.wire.run({"seconds": seconds}))
        assert body["status"] == "WEIRD"
        return str(body["id"])

    async def wait(self, handle: EndpointHandle, job_id: str, stream: bool = False) -> Any:
        async def send(call: Any) -> Any:
            return await self.transport.send(handle, call)

        job = handle._new_job(job_id)
        clock = WaitClock(None, handle.waits.poll, stream=stream)
        plan = (plans.stream(job, clock, plans.Deadline(None), batches=True) if stream
                else plans.wait(job, clock, plans.Deadline(None)))
        return await asyncio.wait_for(AsyncDriver(send).run(plan), 20)


@pytest.fixture
async def rig(redis_url: str, local_endpoint: Callable[..., Any]) -> AsyncIterator[tuple[Rig, Any]]:
    ep = local_endpoint(slow, endpoint_id="ep", faults={"status_override": "WEIRD"})
    client = aioredis.Redis.from_url(redis_url)
    transport = Transport(GatewaySettings(rate_limits_env=""), client)
    yield Rig(transport, ep.base_url), ep
    await transport.close()
    await client.aclose()
    profiles.clear()


def warnings_for(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and job_id in r.getMessage() and "not one of RunPod's" in r.getMessage()]


@pytest.mark.parametrize("long_poll", [1.0, 0.0], ids=["long-polls", "plain-polls"])
async def test_an_unknown_status_ends_the_wait_after_the_limit(
        rig: tuple[Rig, Any], long_poll: float, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    r, ep = rig
    handle = r.handle(long_poll)
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "0.6")
    job_id = await r.submit(handle, 30)
    with pytest.raises(errors.UnknownStatus) as info:
        await r.wait(handle, job_id)
    assert (info.value.status, info.value.waited, info.value.job_id) == ("WEIRD", 0.6, job_id)
    assert len(warnings_for(caplog, job_id)) == 1
    assert ep.job_state(job_id)["status"] == "IN_PROGRESS"  # not cancelled


async def test_a_stream_showing_an_unknown_status_ends_too(
        rig: tuple[Rig, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    r, _ = rig
    handle = r.handle()
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "0.6")
    job_id = await r.submit(handle, 30)
    with pytest.raises(errors.UnknownStatus):
        await r.wait(handle, job_id, stream=True)
    assert len(warnings_for(caplog, job_id)) == 1


async def test_an_unknown_status_that_ends_in_time_completes(
        rig: tuple[Rig, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    r, _ = rig
    handle = r.handle(0.0)  # plain polls see the status while the job runs
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "30")
    job_id = await r.submit(handle, 0.5)
    body = await r.wait(handle, job_id)
    assert body["status"] == "COMPLETED" and body["output"] == "done"
    assert len(warnings_for(caplog, job_id)) == 1


async def test_a_bad_limit_setting_fails_the_wait_instead_of_hanging(
        rig: tuple[Rig, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    r, _ = rig
    handle = r.handle()
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "soon")
    job_id = await r.submit(handle, 30)
    with pytest.raises(errors.ConfigurationError, match="BRIDGE_UNKNOWN_STATUS_TIMEOUT"):
        await r.wait(handle, job_id)
