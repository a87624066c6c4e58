"""HTTP for the gateway: one :class:`~bridge.transport.AiohttpTransport` per worker process
(pooled, no redirects, the environment's proxies), one budget per endpoint, and the public
:class:`~bridge.wire.Wire` for building requests and turning every answer into a value or a
:mod:`bridge.errors` error (the one place that happens). API keys are resolved here, in the
worker, from its settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bridge import errors
from bridge.gateway.budget import Budget
from bridge.gateway.settings import GatewaySettings
from bridge.lifecycle.endpoint import EndpointState
from bridge.transport import AiohttpTransport, Reply
from bridge.wire import Call, Wire, parse_retry_after

#: 429s to one paced submit absorbed before the caller sees one (each cuts the shared rate).
PACED_RESENDS = 20


class EndpointHandle(EndpointState):
    """What the gateway keeps per endpoint: the lifecycle's endpoint state (wire, wait
    settings, learned profile) and the endpoint's budget."""

    def __init__(self, wire: Wire, budget: Budget, settings: GatewaySettings) -> None:
        super().__init__(wire, settings.waits)
        self.budget = budget

    def _count(self, route: str) -> None:
        """Requests are counted where they are sent (:meth:`Transport.send`): paced resends too."""


class Transport:
    def __init__(self, settings: GatewaySettings, redis: Any) -> None:
        self.settings = settings
        self.redis = redis
        self.http = AiohttpTransport(limit=settings.max_connections, limit_per_host=0, ttl_dns_cache=300,
                                     enable_cleanup_closed=True)
        self._endpoints: dict[tuple[str, str | None], EndpointHandle] = {}

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
            handle = EndpointHandle(wire, budget, self.settings)
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

    async def send(self, handle: EndpointHandle, call: Call) -> Reply:
        """Send one request inside the endpoint's budget; its answer, whatever the status
        (a TransportError when the endpoint could not be reached).

        A 429 also slows the endpoint's adaptive submit rate (every worker's). A submit the
        adaptive rate paced that is still answered 429 is sent again here once the rate
        allows (same request, same Idempotency-Key): a job queued behind a limited endpoint
        waits instead of spending its retries (and their deadline) on the queue. Other 429s
        (the first ones, before any pacing) go back to the caller to retry and report."""
        resent = 0
        route = call.route
        while True:
            handle.requests[route] = handle.requests.get(route, 0) + 1
            async with handle.budget.slot(route) as ticket:
                reply = await self.http.send(call)
            if reply.status == 429:
                await handle.budget.throttled(route, _retry_after(reply.headers), ticket)
                if ticket and resent < PACED_RESENDS:
                    resent += 1
                    continue
            elif reply.status < 300:
                handle.budget.accepted(route)
            return reply

    async def call(self, handle: EndpointHandle, call: Call) -> dict[str, Any]:
        """:meth:`send`, once, and the answer as a value or a bridge error."""
        reply = await self.send(handle, call)
        return handle.wire.response(call, reply.status, reply.headers, reply.body)

    async def close(self) -> None:
        await self.http.aclose()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    return parse_retry_after(headers.get("Retry-After"))
