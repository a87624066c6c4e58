"""HTTP for the gateway: one pooled aiohttp session per worker process, one budget per
endpoint, and the client's :class:`~bridge.client._wire.Wire` for building requests and
turning every answer into a value or a :mod:`bridge.errors` error (the one place that
happens). API keys are resolved here, in the worker, from its settings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from bridge import errors
from bridge.client._wire import CONNECT_TIMEOUT, Call, Wire
from bridge.gateway.budget import Budget
from bridge.gateway.settings import GatewaySettings


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
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        return self._session

    def endpoint(self, endpoint_id: str, base_url: str | None = None) -> EndpointHandle:
        handle = self._endpoints.get((endpoint_id, base_url))
        if handle is None:
            wire = Wire(endpoint_id, None, base_url)
            budget = Budget(self.redis, self.settings.limits_for(wire.base_url), endpoint_id)
            handle = EndpointHandle(wire, budget)
            self._endpoints[(endpoint_id, base_url)] = handle
        return handle

    async def call(self, handle: EndpointHandle, call: Call) -> dict[str, Any]:
        """Send one request inside the endpoint's budget; the answer or a bridge error."""
        handle.requests[call.route] = handle.requests.get(call.route, 0) + 1
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=call.read_timeout)
        async with handle.budget.slot(call.route):
            try:
                async with self.session.request(
                    call.method, call.url, data=call.body, headers=dict(call.headers), timeout=timeout
                ) as resp:
                    raw = await resp.read()
                    status, headers = resp.status, dict(resp.headers)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                raise handle.wire.transport_error(call, exc) from None
        return handle.wire.response(call, status, headers, raw)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, errors.RETRYABLE)
