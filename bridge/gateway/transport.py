"""HTTP for the gateway: one pooled aiohttp session per worker process, one budget per
endpoint, and the client's :class:`~bridge.client._wire.Wire` for building requests and
turning every answer into a value or a :mod:`bridge.errors` error (the one place that
happens). API keys are resolved here, in the worker, from its settings.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from bridge import errors
from bridge.client._wire import CONNECT_TIMEOUT, Call, Wire
from bridge.gateway.budget import Budget
from bridge.gateway.settings import GatewaySettings

#: 429s to one paced submit absorbed before the caller sees one (each cuts the shared rate).
PACED_RESENDS = 20


class EndpointHandle:
    """What the gateway keeps per endpoint: the wire, its budget, whether long polls work."""

    def __init__(self, wire: Wire, budget: Budget) -> None:
        self.wire = wire
        self.budget = budget
        self.endpoint_id = wire.endpoint_id
        self.base_url = wire.base_url
        self.long_poll_ok = True
        self.requests: dict[str, int] = {}  # per route, for the bench and logs


class Transport:
    def __init__(self, settings: GatewaySettings, redis: Any) -> None:
        self.settings = settings
        self.redis = redis
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[tuple[str, str | None], EndpointHandle] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.settings.max_connections, limit_per_host=0, ttl_dns_cache=300,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent",), cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def endpoint(self, name: str, base_url: str | None = None) -> EndpointHandle:
        """The handle for endpoint ``name``: a plain endpoint id, or a named endpoint from
        ``BRIDGE_ENDPOINTS`` or a plugin (its own id, base URL and API key variable)."""
        handle = self._endpoints.get((name, base_url))
        if handle is None:
            named = self._named(name)
            api_key_env = named.get("api_key_env")
            api_key = os.environ.get(api_key_env) if api_key_env else None
            if api_key_env and not api_key:
                raise errors.ConfigurationError(
                    f"endpoint {name!r} reads its API key from {api_key_env}, which is not set",
                    None, name, f"set {api_key_env} in the worker's environment",
                )
            wire = Wire(named.get("endpoint_id") or name, api_key, named.get("base_url") or base_url)
            budget = Budget(self.redis, self.settings.limits_for(wire.base_url), wire.endpoint_id, wire.base_url)
            handle = EndpointHandle(wire, budget)
            self._endpoints[(name, base_url)] = handle
        return handle

    def _named(self, name: str) -> dict[str, str]:
        if name in self.settings.endpoints:
            return self.settings.endpoints[name]
        from bridge.hooks import Hooks

        spec = Hooks.from_settings().endpoints().get(name) if name else None
        if spec is None:
            return {}
        return {k: v for k, v in (("endpoint_id", spec.endpoint_id), ("base_url", spec.base_url),
                                  ("api_key_env", spec.api_key_env)) if v}

    async def call(self, handle: EndpointHandle, call: Call) -> dict[str, Any]:
        """Send one request inside the endpoint's budget; the answer or a bridge error.

        A 429 also slows the endpoint's adaptive submit rate (every worker's). A submit the
        adaptive rate paced that is still answered 429 is sent again here once the rate
        allows (same request, same Idempotency-Key): a job queued behind a limited endpoint
        waits instead of spending its retries (and their deadline) on the queue. Other 429s
        (the first ones, before any pacing) are raised for the caller to retry and report."""
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=call.read_timeout)
        resent = 0
        while True:
            handle.requests[call.route] = handle.requests.get(call.route, 0) + 1
            async with handle.budget.slot(call.route) as ticket:
                try:
                    async with self.session.request(
                        call.method, call.url, data=call.body, headers=dict(call.headers), timeout=timeout
                    ) as resp:
                        raw = await resp.read()
                        status, headers = resp.status, dict(resp.headers)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    raise handle.wire.transport_error(call, exc) from None
            try:
                body = handle.wire.response(call, status, headers, raw)
            except errors.RateLimited as exc:
                await handle.budget.throttled(call.route, exc.retry_after, ticket)
                if ticket and resent < PACED_RESENDS:
                    resent += 1
                    continue
                raise
            handle.budget.accepted(call.route)
            return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, errors.RETRYABLE)
