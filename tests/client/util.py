"""Helpers for the client tests: the asyncio facade, a webhook receiver, a deadline poller."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import bridge
from bridge.client import AsyncioEndpoint, RetryPolicy

#: Fast retries so fault-injection tests recover quickly.
FAST_RETRY = RetryPolicy(attempts=8, deadline=20.0, base=0.02, max_backoff=0.5)


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class AsyncFacade:
    """A blocking view of an asyncio object; results that are asyncio objects are wrapped too."""

    def __init__(self, target: Any, loop: LoopThread) -> None:
        self._target = target
        self._loop = loop

    @property
    def target(self) -> Any:
        return self._target

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, (bridge.AsyncioJob, AsyncioEndpoint)):
            return AsyncFacade(value, self._loop)
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.isasyncgenfunction(attr):
            def agen(*args: Any, **kwargs: Any) -> Iterator[Any]:
                iterator = attr(*args, **kwargs)
                while True:
                    try:
                        yield self._loop.run(iterator.__anext__())
                    except StopAsyncIteration:
                        return
            return agen
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._wrap(self._loop.run(attr(*a, **k)))
        if callable(attr):
            return lambda *a, **k: self._wrap(attr(*a, **k))
        return attr


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 recording POSTed JSON bodies; ``fail_first`` answers 500 first."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[Any] = []
        self.hits = 0
        self.event = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.hits += 1
                if receiver.hits <= fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(raw))
                self.send_response(200)
                self.end_headers()
                receiver.event.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count and time.monotonic() < deadline:
            self.event.wait(max(0.0, deadline - time.monotonic()))
            self.event.clear()
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()



class EdgeProxy:
    """A reverse proxy in front of the local endpoint, for the edges the endpoint itself
    cannot produce: no ``/status-sync`` route (``status_sync=404`` or 405, the way many
    servers answer an unknown route), terminal ``/stream`` replies without the ``stream``
    key, and ``/run`` answers lost after the job was created (``drop_runs``: that many
    connections are closed instead of answered)."""

    def __init__(self, target: str, *, status_sync: int | None = 404, drop_stream_key: bool = False,
                 drop_runs: int = 0) -> None:
        from aiohttp import ClientSession, web

        self.target = target.rstrip("/")
        self.dropped = 0
        self.seen: list[str] = []  # request targets as received (absolute-form when used as a proxy)
        self.loop = LoopThread()
        proxy = self

        async def forward(request: web.Request) -> web.StreamResponse:
            path = request.match_info["tail"]
            self.seen.append(str(request.url))
            if status_sync is not None and "/status-sync/" in path:
                return web.Response(status=status_sync, text=f"{status_sync}: Not Found")
            async with proxy.session.request(
                request.method, f"{proxy.target}/{path}", params=request.query,
                data=await request.read(), headers={k: v for k, v in request.headers.items()
                                                    if k.lower() not in ("host", "content-length")},
            ) as resp:
                raw = await resp.read()
                status, ctype = resp.status, resp.headers.get("Content-Type", "application/json")
                retry_after = resp.headers.get("Retry-After")
            if path.endswith("/run") and proxy.dropped < drop_runs:
                proxy.dropped += 1
                assert request.transport is not None
                request.transport.close()  # the job exists; its answer is lost
                return web.Response(status=500)
            if drop_stream_key and "/stream/" in path and status == 200:
                body = json.loads(raw)
                if body.get("status") in ("COMPLETED", "CANCELLED", "FAILED", "TIMED_OUT") and not body.get("stream"):
                    body.pop("stream", None)
                raw = json.dumps(body).encode()
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.Response(status=status, body=raw, content_type=ctype.split(";")[0], headers=headers)

        async def start() -> str:
            self.session = ClientSession()
            app = web.Application()
            app.router.add_route("*", "/v2/{tail:.*}", forward)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return f"http://127.0.0.1:{port}/v2"

        self.base_url: str = self.loop.run(start())

    def close(self) -> None:
        async def stop() -> None:
            await self.session.close()
            await self.runner.cleanup()

        self.loop.run(stop())
        self.loop.close()
