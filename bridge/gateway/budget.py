"""Per-endpoint request budgets shared by every gateway worker through Redis.

A budget is, per endpoint and route, N requests per 10 s window (shared: one counter per
window in Redis, ``bridge:budget:{endpoint}:{route}``) and C requests at once (per process).
Processes take tokens from the shared window in small batches, so the Redis cost is one
round trip per batch, not per request, and ten workers on ten machines together stay
inside N. Routes with no limit cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from bridge import keys
from bridge.gateway.settings import WINDOW_SECONDS

# Grant up to ARGV[2] tokens from the window's remaining ARGV[1]; returns the grant.
_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local left = tonumber(ARGV[1]) - used
if left <= 0 then return 0 end
local grant = math.min(left, tonumber(ARGV[2]))
redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return grant
"""


class _Route:
    def __init__(self, rate: int, concurrent: int) -> None:
        self.rate = rate
        self.sem = asyncio.Semaphore(concurrent) if concurrent > 0 else None
        self.tokens = 0
        self.window = -1
        self.lock = asyncio.Lock()


class Budget:
    """``async with budget.slot(endpoint_id, route):`` around every request."""

    def __init__(self, redis: Any, limits: dict[str, tuple[int, int]], endpoint_id: str) -> None:
        self.redis = redis
        self.endpoint_id = endpoint_id
        self.routes = {r: _Route(rate, conc) for r, (rate, conc) in limits.items() if rate or conc}
        self._take = redis.register_script(_TAKE) if self.routes else None
        self.waited = 0.0  # seconds spent waiting for tokens (reported by the bench)

    @contextlib.asynccontextmanager
    async def slot(self, route: str) -> AsyncIterator[None]:
        spec = self.routes.get("status" if route == "status-sync" else route)
        if spec is None:
            yield
            return
        if spec.rate:
            await self._token(route, spec)
        if spec.sem is None:
            yield
            return
        async with spec.sem:
            yield

    async def _token(self, route: str, spec: _Route) -> None:
        async with spec.lock:
            while True:
                now = time.time()
                window = int(now // WINDOW_SECONDS)
                if window != spec.window:
                    spec.window, spec.tokens = window, 0
                if spec.tokens > 0:
                    spec.tokens -= 1
                    return
                batch = max(1, min(50, spec.rate // 20))
                key = f"{keys.budget(self.endpoint_id, route)}:{window}"
                assert self._take is not None
                granted = int(await self._take(keys=[key], args=[spec.rate, batch, int(WINDOW_SECONDS * 2)]))
                if granted > 0:
                    spec.tokens = granted - 1
                    return
                # The shared window is spent: wait for the next one.
                pause = (window + 1) * WINDOW_SECONDS - now + 0.01
                self.waited += pause
                await asyncio.sleep(pause)
