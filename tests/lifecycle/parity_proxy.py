"""A loopback proxy in front of the local endpoint that records the requests each driver sends,
in order, and answers scripted faults.

The local endpoint counts requests per route (``/_bridge/stats``) and injects faults by
probability or token bucket; the parity test needs more: the *sequence* a driver sent (method,
route, long-poll wait, the answer's status) and faults that hit exactly the first N requests
of a route whatever the driver's timing ("the first /run answers 429"), so that every driver
meets the same answers. Everything else is forwarded unchanged to the real local endpoint.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bridge.testing import AppServer

#: Headers a driver's request carries that the endpoint needs.
_FORWARD = ("Authorization", "Content-Type", "Idempotency-Key")
#: Polling routes, whose number of repeats depends on timing (see ``collapse``).
POLLS = ("status", "status-sync", "stream")


@dataclass
class Fault:
    """Answer the next ``times`` requests to any of ``routes`` with this instead of forwarding."""

    routes: tuple[str, ...]
    times: int
    status: int
    body: bytes = b'{"error": "injected by the parity proxy"}'
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    """One request, logged when it arrives (a long poll answered after a later request still
    comes first) and completed with the status of its answer."""

    method: str
    endpoint: str
    route: str
    wait: str  # the long-poll wait asked for: "20s", "short" (< 5 s) or "" (none)
    status: int | None = None

    def __str__(self) -> str:
        wait = f"?wait={self.wait}" if self.wait else ""
        return f"{self.method} {self.route}{wait} -> {self.status}"


def _wait(query: str | None) -> str:
    if query is None:
        return ""
    try:
        ms = float(query)
    except ValueError:
        return query
    # A wait cut short by a deadline varies with timing; a full one is a setting to compare.
    return f"{ms / 1000:g}s" if ms >= 5000 else "short"


def collapse(seen: list[Seen]) -> list[str]:
    """The request log with each run of identical polls folded into one ``... (1+)`` line:
    how many looks a wait takes depends on timing (and is bench/'s business); which routes
    are asked, with which wait, in which order and with which answers does not."""
    out: list[str] = []
    for item in map(str, seen):
        route = item.split(" ")[1].split("?")[0]
        if route not in POLLS:
            out.append(item)
        elif not out or out[-1] != f"{item} (1+)":
            out.append(f"{item} (1+)")
    return out


class ParityProxy:
    """``base_url`` stands in for the local endpoint's; ``begin`` starts a fresh log and script."""

    def __init__(self, target_base_url: str) -> None:
        self.target = target_base_url.rstrip("/")
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._faults: list[Fault] = []
        self._jobs: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        app = web.Application()
        app.router.add_route("*", "/v2/{endpoint}/{route}", self._handle)
        app.router.add_route("*", "/v2/{endpoint}/{route}/{job_id}", self._handle)
        app.on_cleanup.append(self._close_session)
        self.server = AppServer(app)
        self.base_url = f"{self.server.url}/v2"

    def begin(self, faults: list[Fault]) -> None:
        with self._lock:
            self._seen.clear()
            self._jobs.clear()
            self._faults = [Fault(**vars(f)) for f in faults]  # copies: times counts down

    def seen(self, endpoint: str) -> list[Seen]:
        with self._lock:
            return [s for s in self._seen if s.endpoint == endpoint]

    def jobs(self) -> list[str]:
        """Ids of the remote jobs created since ``begin`` (from /run and /runsync answers)."""
        with self._lock:
            return list(self._jobs)

    def close(self) -> None:
        self.server.close()

    async def _close_session(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def _scripted(self, route: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and route in fault.routes:
                    fault.times -= 1
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.Response:
        endpoint, route = request.match_info["endpoint"], request.match_info["route"]
        seen = Seen(request.method, endpoint, route, _wait(request.query.get("wait")))
        with self._lock:
            self._seen.append(seen)
        body = await request.read()
        fault = self._scripted(route)
        if fault is not None:
            response = web.Response(status=fault.status, body=fault.body, content_type=fault.content_type,
                                    headers=fault.headers)
        else:
            response = await self._forward(request, body)
        with self._lock:
            seen.status = response.status
            if fault is None and route in ("run", "runsync") and response.status == 200:
                self._jobs.append(str(json.loads(response.body)["id"]))  # type: ignore[arg-type]
        return response

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        url = self.target + request.rel_url.path_qs.removeprefix("/v2")
        headers = {k: request.headers[k] for k in _FORWARD if k in request.headers}
        async with self._session.request(request.method, url, data=body, headers=headers) as upstream:
            answer = await upstream.read()
            keep: dict[str, Any] = {k: upstream.headers[k] for k in ("Retry-After",) if k in upstream.headers}
            return web.Response(status=upstream.status, body=answer,
                                content_type=upstream.content_type, headers=keep)
