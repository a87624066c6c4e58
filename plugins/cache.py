"""``cache``: a Redis result cache, so identical requests pay once.

Key: ``<BRIDGE_KEY_PREFIX>:cache:<endpoint>:<sha256 of base URL + normalised input>``, where
the input is the one about to be submitted (after every input transform) serialised as
canonical JSON (sorted keys, no whitespace). The value is ``{"output": <raw output>}``,
stored when a job COMPLETES, with a TTL. A hit sets ``ctx.meta["cache"] = "hit"`` (a miss
``"miss"``), which the gateway copies into the task's meta; the hit's output then goes
through ``bridge_transform_output`` like a fresh one.

Options: ``url`` (Redis URL, required: the cache is off unless configured), ``ttl`` seconds
(default 3600), ``endpoints`` (default all), ``wait`` seconds (default 0): when > 0, a job
whose identical twin is already running waits up to that long for the twin's result instead
of submitting (in-flight de-duplication).

The hooks are ``async def`` (``redis.asyncio``, one client per event loop) so the asyncio
gateway never blocks on Redis, and waiting for a twin costs no thread; sync callers run
them on their private loop. A cache outage never fails a job: errors are logged and count
as a miss.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import weakref
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from bridge import hookimpl, keys
from bridge.errors import ConfigurationError

from ._options import as_float, endpoint_filter

__all__ = ["CachePlugin", "cache_key"]

logger = logging.getLogger("bridge.plugins.cache")

_STATE_KEY = "cache_key"
_STATE_LEADER = "cache_leader"


def cache_key(endpoint_id: str, input: Any, base_url: str | None = None) -> str | None:
    """The Redis key for this request, or None when the input is not JSON (never cached)."""
    try:
        canonical = json.dumps(input, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    digest = hashlib.sha256(f"{base_url or ''}\n{canonical}".encode()).hexdigest()
    return f"{keys.prefix()}:cache:{endpoint_id}:{digest}"


class CachePlugin:
    """The registered plugin object; see the module docstring for options."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        url = options.get("url")
        if not url:
            raise ConfigurationError(
                "plugin 'cache' needs a Redis URL", None, None,
                "BRIDGE_PLUGIN_CACHE_URL=redis://host:6379/0 (or 'url' in BRIDGE_PLUGINS_CONFIG)",
            )
        self.url = str(url)
        self.ttl = max(1, int(as_float("cache", options, "ttl", 3600)))
        self.wait = as_float("cache", options, "wait", 0.0)
        self.endpoints = endpoint_filter(options)
        # An asyncio Redis client belongs to the loop it first ran on: one per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def _redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = aioredis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
            self._clients[loop] = client
        return client

    def _applies(self, ctx: Any) -> bool:
        return self.endpoints is None or ctx.endpoint_id in self.endpoints

    @hookimpl
    async def bridge_lookup(self, ctx: Any, input: Any) -> Any:
        if not self._applies(ctx):
            return None
        key = cache_key(ctx.endpoint_id, input, ctx.base_url)
        if key is None:
            return None
        ctx.state[_STATE_KEY] = key
        try:
            found = await self._redis().get(key)
            if found is None and self.wait > 0:
                found = await self._wait_for_twin(ctx, key)
        except (redis.RedisError, OSError) as exc:
            logger.warning("cache lookup failed for endpoint %s (treated as a miss): %s", ctx.endpoint_id, exc)
            ctx.meta["cache"] = "error"
            return None
        if found is None:
            ctx.meta["cache"] = "miss"
            return None
        ctx.meta["cache"] = "hit"
        return json.loads(found)["output"]

    async def _wait_for_twin(self, ctx: Any, key: str) -> Any:
        """Become the job that computes ``key``, or wait for the one that already does."""
        client = self._redis()
        pending = key + ":pending"
        # The pending mark outlives a crashed leader by at most `wait`, then others submit.
        if await client.set(pending, ctx.task_id or ctx.job_id or "1", nx=True, ex=max(1, int(self.wait))):
            ctx.state[_STATE_LEADER] = pending
            return None
        deadline = time.monotonic() + self.wait
        pause = 0.02
        while time.monotonic() < deadline:
            found = await client.get(key)
            if found is not None:
                return found
            if not await client.exists(pending):
                return await client.get(key)  # the twin failed or was cancelled: submit ourselves
            # back off between polls: the twin may take minutes
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.5)
        return None

    @hookimpl(tryfirst=True)
    async def bridge_transform_output(self, ctx: Any, output: Any) -> None:
        # tryfirst: store the endpoint's raw output, before other plugins reshape it.
        key = ctx.state.get(_STATE_KEY)
        if key is None or ctx.meta.get("cache") == "hit" or output is None:
            return None
        try:
            value = json.dumps({"output": output}, separators=(",", ":"))
        except (TypeError, ValueError):
            return None
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.set(key, value, ex=self.ttl)
            if ctx.state.get(_STATE_LEADER):
                pipe.delete(ctx.state.pop(_STATE_LEADER))
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            logger.warning("cache store failed for endpoint %s: %s", ctx.endpoint_id, exc)
        return None

    async def _release(self, ctx: Any) -> None:
        pending = ctx.state.pop(_STATE_LEADER, None)
        if pending:
            try:
                await self._redis().delete(pending)
            except (redis.RedisError, OSError) as exc:
                logger.warning("cache could not release %s: %s", pending, exc)

    @hookimpl
    async def bridge_on_failed(self, ctx: Any) -> None:
        await self._release(ctx)  # let waiting twins submit at once instead of timing out

    @hookimpl
    async def bridge_on_cancelled(self, ctx: Any) -> None:
        await self._release(ctx)
