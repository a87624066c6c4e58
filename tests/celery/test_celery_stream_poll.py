"""The /stream pause is its own setting (BRIDGE_STREAM_POLL_INTERVAL, default 0.2 s, shorter
than plain status polls), part of the one WaitSettings, and a stream job drains through a
real gateway, Redis and local endpoint. Latency itself is measured in bench/, not asserted."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.gateway.core import Gateway, JobSpec
from bridge.gateway.settings import GatewaySettings
from bridge.hooks import Hooks
from bridge.lifecycle.clocks import WaitClock
from bridge.lifecycle.settings import PollPolicy, WaitSettings
from bridge.testing import LocalEndpoint


async def tokens(job: dict[str, Any]) -> Any:
    for word in ["a", "b"]:
        await asyncio.sleep(0.3)
        yield word


def test_the_default_and_the_variable(monkeypatch):
    monkeypatch.delenv("BRIDGE_STREAM_POLL_INTERVAL", raising=False)
    poll = GatewaySettings().waits.poll
    assert poll.stream_initial == 0.2 < poll.initial
    monkeypatch.setenv("BRIDGE_STREAM_POLL_INTERVAL", "0.07")
    assert GatewaySettings().waits.poll.stream_initial == 0.07
    clock = WaitClock(None, GatewaySettings().waits.poll, stream=True)
    assert clock.next_pause() == 0.07  # a stream's first pause is the stream interval


def test_a_stream_job_drains_through_the_gateway(redis_url):
    waits = WaitSettings(poll=PollPolicy(long_poll=0, stream_initial=0.11, initial=0.9))
    settings = GatewaySettings(redis_url=redis_url, waits=waits)
    with LocalEndpoint(tokens, endpoint_id="tok") as ep:
        gateway = Gateway(settings, Hooks.empty())
        try:
            spec = JobSpec(task_id="t-stream", endpoint_id="tok", input={}, base_url=ep.base_url)
            assert gateway.stream(spec) == ["a", "b"]
            assert gateway.call(gateway.streams.so_far("t-stream")) == ["a", "b"]
        finally:
            gateway.close()
