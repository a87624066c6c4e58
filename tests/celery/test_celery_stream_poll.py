"""The /stream poll interval is its own setting (BRIDGE_STREAM_POLL_INTERVAL, default 0.2 s,
shorter than plain status polls), used by the gateway's stream watches, through a real
gateway, Redis and local endpoint. Latency itself is measured in bench/, not asserted."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.gateway.core import Gateway
from bridge.gateway.settings import GatewaySettings
from bridge.hooks import Hooks
from bridge.testing import LocalEndpoint


async def tokens(job: dict[str, Any]) -> Any:
    for word in ["a", "b"]:
        await asyncio.sleep(0.3)
        yield word


def test_the_default_and_the_variable(monkeypatch):
    monkeypatch.delenv("BRIDGE_STREAM_POLL_INTERVAL", raising=False)
    assert GatewaySettings().stream_poll_interval == 0.2 < GatewaySettings().poll_interval
    monkeypatch.setenv("BRIDGE_STREAM_POLL_INTERVAL", "0.07")
    assert GatewaySettings().stream_poll_interval == 0.07


def test_stream_watches_start_at_the_stream_interval(redis_url):
    settings = GatewaySettings(redis_url=redis_url, stream_poll_interval=0.11, poll_interval=0.9)
    with LocalEndpoint(tokens, endpoint_id="tok") as ep:
        gateway = Gateway(settings, Hooks.empty())
        try:
            handle = gateway.transport.endpoint("tok", ep.base_url)
            job_id = gateway.call(gateway.transport.call(handle, handle.wire.run({}, None, None, None, None)))["id"]
            chunks: list[Any] = []

            async def sink(batch: list[Any]) -> None:
                chunks.extend(batch)

            async def first_interval() -> tuple[float, dict[str, Any]]:
                wait = asyncio.ensure_future(gateway.poller.wait(handle, "t-stream", job_id, sink=sink))
                await asyncio.sleep(0)  # the watch is registered; its first poll is in flight
                (watch,) = gateway.poller.watches["t-stream"]
                return watch.interval, await wait

            interval, body = gateway.call(first_interval())
            assert interval == 0.11
            assert chunks == ["a", "b"] and body["status"] == "COMPLETED"
        finally:
            gateway.close()
