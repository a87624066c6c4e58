"""Per-endpoint request budgets shared by every gateway worker through Redis.

A budget is, per endpoint and route, N requests per 10 s window (shared: one counter per
window in Redis, ``bridge:budget:{endpoint}:{route}``) and C requests at once (per process).
Processes take tokens from the shared window in small batches, so the Redis cost is one
round trip per batch, not per request, and ten workers on ten machines together stay
inside N. Routes with no limit cost nothing.

On top, the submit routes (``run``, ``runsync``) of every endpoint have an adaptive rate
(:class:`AdaptiveRate`, ``bridge:budget:{endpoint}:{route}:aimd:{base URL hash}``), learnt
from the endpoint's 429s: none until the first 429, then a token bucket whose rate is cut
(x ``BRIDGE_SUBMIT_RATE_DECREASE``) on a 429 to a request sent after the last cut, paused
for the ``Retry-After``, and raised while sends flow without one (probing up). All
processes share it, so a fleet of workers slows down together instead of failing jobs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from bridge import keys
from bridge.config import env_float
from bridge.gateway.settings import WINDOW_SECONDS

#: Routes whose rate adapts to the endpoint's 429s (the submits).
ADAPTIVE_ROUTES = ("run", "runsync")

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

    def __init__(self, redis: Any, limits: dict[str, tuple[int, int]], endpoint_id: str,
                 base_url: str | None = None) -> None:
        self.redis = redis
        self.endpoint_id = endpoint_id
        self.routes = {r: _Route(rate, conc) for r, (rate, conc) in limits.items() if rate or conc}
        self._take = redis.register_script(_TAKE) if self.routes else None
        self.waited = 0.0  # seconds spent waiting for tokens (reported by the bench)
        #: The learnt submit rates (without a base URL, e.g. a unit test: none).
        self.adaptive = {r: AdaptiveRate(redis, endpoint_id, base_url, r) for r in ADAPTIVE_ROUTES} \
            if base_url else {}

    @contextlib.asynccontextmanager
    async def slot(self, route: str) -> AsyncIterator[float]:
        """Yields the adaptive rate's ticket (pass it to :meth:`throttled`), 0.0 for none."""
        adaptive = self.adaptive.get(route)
        ticket = await adaptive.acquire() if adaptive is not None else 0.0
        spec = self.routes.get("status" if route == "status-sync" else route)
        if spec is None:
            yield ticket
            return
        if spec.rate:
            await self._token(route, spec)
        if spec.sem is None:
            yield ticket
            return
        async with spec.sem:
            yield ticket

    def accepted(self, route: str) -> None:
        """``route``'s request was answered 2xx (the adaptive rate's first estimate counts these)."""
        adaptive = self.adaptive.get(route)
        if adaptive is not None:
            adaptive.accepted()

    async def throttled(self, route: str, retry_after: float | None, ticket: float) -> None:
        """``route``'s request, sent with ``ticket``, was answered 429."""
        adaptive = self.adaptive.get(route)
        if adaptive is not None:
            await adaptive.throttled(retry_after, ticket)

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


# -- the adaptive submit rate ----------------------------------------------------------------

#: Take up to ARGV[1] tokens. Returns {grant, wait, now}: grant -1 when no rate is known
#: (no 429 lately: send freely), else the tokens granted (0: wait seconds, paused or empty).
#: Each granted token raises the rate by step/rate, so a rate in full use rises by ``step``
#: (ARGV[2] of the rate, at least 1/s) per second: the probe up. Redis' clock, one for all.
_AIMD_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'rate', 'tokens', 'stamp', 'pause')
if not s[1] then return {'-1', '0', tostring(now)} end
local rate, tokens, stamp, pause = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), tonumber(s[4])
if now < pause then return {'0', tostring(pause - now), tostring(now)} end
tokens = math.min(math.max(1, rate * tonumber(ARGV[3])), tokens + math.max(0, now - stamp) * rate)
local grant = math.min(math.floor(tokens), tonumber(ARGV[1]))
if grant >= 1 then
  local step = math.max(1, rate * tonumber(ARGV[2]))
  rate = rate + grant * step / rate
  redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'tokens', tostring(tokens - grant), 'stamp', tostring(now))
  return {tostring(grant), '0', tostring(now)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
return {'0', tostring((1 - tokens) / rate), tostring(now)}
"""

#: A 429. ARGV: retry_after (-1: none said), first estimate, decrease, ticket, ttl, floor.
#: The first 429 sets the rate to the estimate; a 429 to a request sent after the last cut
#: (ticket >= cut) cuts it again; 429s to requests sent before it only extend the pause
#: (they belong to the overshoot already answered). Every 429 pauses all senders for the
#: Retry-After (else one interval) and empties the bucket. Returns the rate.
_AIMD_CUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'rate', 'cut', 'pause')
local rate, cut, pause = tonumber(s[1]), tonumber(s[2]) or 0, tonumber(s[3]) or 0
local floor = tonumber(ARGV[6])
if not rate then
  rate, cut = math.max(floor, tonumber(ARGV[2])), now
elseif tonumber(ARGV[4]) >= cut then
  rate, cut = math.max(floor, rate * tonumber(ARGV[3])), now
end
local said = tonumber(ARGV[1])
pause = math.max(pause, now + (said >= 0 and said or 1 / rate))
redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'tokens', '0', 'stamp', tostring(pause),
           'pause', tostring(pause), 'cut', tostring(cut))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return tostring(rate)
"""

log = logging.getLogger("bridge.gateway")

#: Seconds between looks at an endpoint's shared state while it has no rate (one per process).
IDLE_LOOK = 1.0
#: Lowest rate a run of 429s can bring a submit route to, requests per second.
FLOOR_RATE = 0.2
#: Seconds of tokens that may pile up while idle (a small burst after a quiet spell).
BURST_SECONDS = 0.25


class AdaptiveRate:
    """The learnt submit rate of one endpoint (base URL + id) and route, shared through Redis.

    AIMD: no pacing until the endpoint answers 429; then a token bucket at the rate sent
    just before (this process's 2xx answers of the last second), cut by
    ``BRIDGE_SUBMIT_RATE_DECREASE`` (default 0.7) on each new 429, raised by
    ``BRIDGE_SUBMIT_RATE_PROBE`` (default 0.05) of itself (at least 1/s) per second of full
    use, all senders paused for a ``Retry-After``. Forgotten ``BRIDGE_SUBMIT_RATE_MEMORY``
    seconds (default 300) after the last 429. A Redis error makes it step aside (fail open):
    the endpoint's 429s still reach the caller's retries.
    """

    def __init__(self, redis: Any, endpoint_id: str, base_url: str, route: str) -> None:
        digest = hashlib.sha1(base_url.encode()).hexdigest()[:12]  # a name, not security
        self.key = f"{keys.budget(endpoint_id, route)}:aimd:{digest}"
        self.name = f"endpoint {endpoint_id} /{route}"
        self.decrease = env_float("BRIDGE_SUBMIT_RATE_DECREASE", 0.7)
        self.probe = env_float("BRIDGE_SUBMIT_RATE_PROBE", 0.05)
        self.memory = max(1, int(env_float("BRIDGE_SUBMIT_RATE_MEMORY", 300.0)))
        self._take = redis.register_script(_AIMD_TAKE)
        self._cut = redis.register_script(_AIMD_CUT)
        self._lock = asyncio.Lock()
        self._tokens = 0
        self._ticket = 0.0  # Redis time of the last grant (a 429's ticket says when it was sent)
        self._idle_until = 0.0  # monotonic: no rate known until then, no Redis look
        self._accepted: collections.deque[float] = collections.deque(maxlen=4096)
        self.rate: float | None = None  # the last rate seen (bench, logs)
        self.waited = 0.0  # seconds senders spent waiting for tokens
        self.throttled_count = 0

    async def acquire(self) -> float:
        """Wait for a send; the ticket to give :meth:`throttled` if it is answered 429."""
        if self._tokens > 0:
            self._tokens -= 1
            return self._ticket
        if time.monotonic() < self._idle_until:
            return 0.0
        async with self._lock:  # FIFO: one look at Redis at a time per process
            while True:
                if self._tokens > 0:
                    self._tokens -= 1
                    return self._ticket
                if time.monotonic() < self._idle_until:
                    return 0.0
                want = max(1, min(20, int((self.rate or 0) // 20)))
                try:
                    grant_s, wait_s, now_s = await self._take(
                        keys=[self.key], args=[want, self.probe, BURST_SECONDS])
                except Exception as exc:  # pacing must never fail a job
                    self._step_aside(exc)
                    return 0.0
                grant, wait = float(grant_s), float(wait_s)
                if grant < 0:
                    self.rate = None
                    self._idle_until = time.monotonic() + IDLE_LOOK
                    return 0.0
                if grant >= 1:
                    self._tokens, self._ticket = int(grant) - 1, float(now_s)
                    return self._ticket
                self.waited += wait
                await asyncio.sleep(wait)

    def accepted(self) -> None:
        self._accepted.append(time.monotonic())

    async def throttled(self, retry_after: float | None, ticket: float) -> None:
        """A 429 to a request sent with ``ticket``: cut (if new) and pause everyone."""
        self.throttled_count += 1
        self._tokens, self._idle_until = 0, 0.0
        horizon = time.monotonic() - 1.0
        estimate = sum(1 for stamp in self._accepted if stamp >= horizon)
        try:
            rate = float(await self._cut(keys=[self.key], args=[
                -1 if retry_after is None else retry_after, estimate, self.decrease, ticket,
                self.memory, FLOOR_RATE]))
        except Exception as exc:  # the 429 itself still reaches the caller
            self._step_aside(exc)
            return
        if self.rate is None or rate < self.rate * 0.99:
            log.info("bridge: %s answered 429; submits slowed to %.3g/s for every worker", self.name, rate)
        self.rate = rate

    def _step_aside(self, exc: BaseException) -> None:
        self._idle_until = time.monotonic() + IDLE_LOOK
        log.warning("bridge: the adaptive submit rate of %s (Redis key %s) is unavailable; unpaced for "
                    "%g s (%s: check bridge's Redis)", self.name, self.key, IDLE_LOOK, type(exc).__name__)
