"""``AppServer``: serve any aiohttp app on 127.0.0.1 in a background thread, for tests that
need a real peer over loopback (a webhook receiver, a caller's own webhook, an edge-case
endpoint)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from aiohttp import web


class AppServer:
    """Starts serving on construction (port 0 picks a free port); ``url`` is the base URL."""

    def __init__(self, app: web.Application, *, host: str = "127.0.0.1", port: int = 0,
                 access_log_class: Any = None) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        kwargs = {"access_log_class": access_log_class} if access_log_class else {}
        self.runner = web.AppRunner(app, **kwargs)
        self.thread = threading.Thread(target=self.loop.run_forever, name="app-server", daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(port), self.loop).result(10)
        self.url = f"http://{host}:{self.port}"

    async def _start(self, port: int) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, port)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()
