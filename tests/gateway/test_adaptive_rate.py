"""The adaptive submit rate (bridge.gateway.budget.AdaptiveRate) against a real redis-server:
two instances stand for two worker processes sharing one endpoint's rate through Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge import errors, keys
from bridge.embedded_redis import free_port
from bridge.gateway.budget import ADAPTIVE_ROUTES, FLOOR_RATE, AdaptiveRate, Budget
from bridge.gateway.settings import GatewaySettings
from bridge.gateway.transport import Transport

BASE = "http://127.0.0.1:9/v2"


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    made = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    yield made
    for c in made:
        await c.aclose()


async def state(client: aioredis.Redis, rate: AdaptiveRate) -> dict[str, float]:
    raw = await client.hgetall(rate.key)
    return {k.decode(): float(v) for k, v in raw.items()}


async def test_no_429_no_pacing_and_no_state(clients: list[aioredis.Redis]) -> None:
    rate = AdaptiveRate(clients[0], "ep", BASE, "run")
    tickets = [await rate.acquire() for _ in range(50)]
    assert tickets == [0.0] * 50  # sent freely
    assert not await clients[0].exists(rate.key)
    assert rate.key.startswith(keys.budget("ep", "run")) and rate.waited == 0.0


async def test_a_429_paces_every_process_and_honours_retry_after(clients: list[aioredis.Redis]) -> None:
    a = AdaptiveRate(clients[0], "ep", BASE, "run")
    b = AdaptiveRate(clients[1], "ep", BASE, "run")
    for _ in range(5):
        a.accepted()  # this process saw 5 answers in the last second: the first estimate
    await a.throttled(0.3, 0.0)
    first = await state(clients[0], a)
    assert first["rate"] == 5.0 and first["tokens"] == 0.0
    assert await clients[0].ttl(a.key) > 0  # forgotten after BRIDGE_SUBMIT_RATE_MEMORY
    # The other "process" never saw a 429, yet waits for the pause and takes shared tokens.
    tickets = [await b.acquire() for _ in range(3)]
    assert all(t >= first["pause"] for t in tickets)  # Redis time: none before Retry-After
    assert tickets == sorted(tickets) and tickets[2] - tickets[0] >= 1.5 / 5.0  # 5/s, paced
    assert b.waited > 0


async def test_a_cut_applies_once_per_overshoot_and_probing_raises_the_rate(
        clients: list[aioredis.Redis]) -> None:
    a = AdaptiveRate(clients[0], "ep", BASE, "run")
    for _ in range(20):
        a.accepted()
    await a.throttled(None, 0.0)  # no Retry-After: one interval's pause
    cut_at = (await state(clients[0], a))["cut"]
    # A 429 to a request sent before the cut (ticket 0 or older) is part of the same burst.
    await a.throttled(None, cut_at - 0.001)
    assert (await state(clients[0], a))["rate"] == 20.0
    # Sent after the cut and still refused: the rate was too high, cut by the decrease (0.7)
    # (from 20 + 1/20: the grant itself probed up by 1/rate).
    ticket = await a.acquire()
    assert ticket >= cut_at
    await a.throttled(None, ticket)
    assert (await state(clients[0], a))["rate"] == pytest.approx((20 + 1 / 20) * 0.7)
    # Every granted send raises the rate by max(1, 5%)/rate: probing up while sends flow.
    for _ in range(10):
        await a.acquire()
    assert (await state(clients[0], a))["rate"] == pytest.approx((20 + 1 / 20) * 0.7 + 10 / 14, rel=0.01)


async def test_the_rate_never_falls_below_the_floor(clients: list[aioredis.Redis]) -> None:
    a = AdaptiveRate(clients[0], "ep", BASE, "run")
    await a.throttled(0.0, 0.0)  # refused at once: no estimate at all
    assert (await state(clients[0], a))["rate"] == FLOOR_RATE


async def test_rates_are_per_base_url_endpoint_and_route(clients: list[aioredis.Redis]) -> None:
    limited = AdaptiveRate(clients[0], "ep", BASE, "run")
    await limited.throttled(30.0, 0.0)
    others = [AdaptiveRate(clients[1], "ep", "http://127.0.0.1:10/v2", "run"),
              AdaptiveRate(clients[1], "other", BASE, "run"),
              AdaptiveRate(clients[1], "ep", BASE, "runsync")]
    assert len({limited.key, *(o.key for o in others)}) == 4
    for other in others:  # a 30 s pause elsewhere: these send at once
        assert await asyncio.wait_for(other.acquire(), 5) == 0.0


async def test_budget_slot_paces_submits_and_reports_429s(clients: list[aioredis.Redis]) -> None:
    budget = Budget(clients[0], {}, "ep", BASE)
    assert set(budget.adaptive) == set(ADAPTIVE_ROUTES)
    async with budget.slot("run") as ticket:
        assert ticket == 0.0
    budget.accepted("run")
    await budget.throttled("run", 0.2, ticket)
    await budget.throttled("status", 0.2, 0.0)  # not adaptive: nothing to learn
    async with budget.slot("run") as ticket:
        assert ticket >= (await state(clients[0], budget.adaptive["run"]))["pause"]
    async with budget.slot("status") as ticket:
        assert ticket == 0.0


async def test_an_unreachable_redis_steps_aside_instead_of_failing(caplog: pytest.LogCaptureFixture) -> None:
    down = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry_on_timeout=False)
    rate = AdaptiveRate(down, "ep", BASE, "run")
    await rate.throttled(1.0, 0.0)  # does not raise: the 429 still goes to the caller
    assert await rate.acquire() == 0.0
    assert "adaptive submit rate" in caplog.text
    await down.aclose()


async def test_a_paced_submit_answered_429_is_sent_again_not_failed(
        clients: list[aioredis.Redis], local_endpoint: Callable[..., Any]) -> None:
    """Through the gateway's transport against the local endpoint (1 /run per s): the first
    429 (nothing paced yet) goes to the caller; a submit the learnt rate paced that is still
    refused waits for the rate again with the same Idempotency-Key, and is accepted."""
    ep = local_endpoint(lambda job: job["input"], endpoint_id="ep", faults={"rate_limits": {"run": [1, 1.0]}})
    transport = Transport(GatewaySettings(rate_limits_env=""), clients[0])
    handle = transport.endpoint("ep", ep.base_url)
    try:
        accepted = await transport.call(handle, handle.wire.run({"n": 0}))
        with pytest.raises(errors.RateLimited):  # unpaced: the caller's retries see it
            await transport.call(handle, handle.wire.run({"n": 1}))
        # Now paced, but let the shared rate overshoot: 50/s against the endpoint's 1/s.
        await clients[0].hset(handle.budget.adaptive["run"].key, "rate", "50")
        bodies = [await transport.call(handle, handle.wire.run({"n": n})) for n in (2, 3)]
    finally:
        await transport.close()
    assert accepted["id"] and all(b["id"] for b in bodies)
    refused = ep.stats("ep")["run"] - ep.submissions("ep")
    assert refused >= 2 and handle.requests["run"] == ep.stats("ep")["run"]  # the paced ones were resent
    assert (await state(clients[0], handle.budget.adaptive["run"]))["rate"] < 50  # and cut the rate
