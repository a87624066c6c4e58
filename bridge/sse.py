"""Server-sent events: relay a bridge task's Redis Stream to browsers.

``GET /streams/{task_id}`` answers ``text/event-stream``; each chunk is an ``event: chunk``
whose ``id:`` is the Redis Stream entry id, so a browser's ``EventSource`` that reconnects
sends ``Last-Event-ID`` and resumes exactly after the last chunk it saw (``?from=ID`` does
the same for clients that cannot set headers). The stream ends with ``event: end`` carrying
``{"status", "error"}``. Comment lines keep idle connections open through proxies.

Served by ``bridge gateway`` (127.0.0.1 by default) or mounted into your own aiohttp app with
:func:`add_routes`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from bridge.streams import StreamEvent, aread_stream

log = logging.getLogger("bridge.sse")

#: Seconds between keep-alive comments on an idle stream.
HEARTBEAT = 15.0
REDIS_KEY: web.AppKey[Any] = web.AppKey("bridge_sse_redis", object)
CORS_KEY: web.AppKey[str] = web.AppKey("bridge_sse_cors", str)


def format_event(event: StreamEvent) -> bytes:
    if event.eof:
        data = json.dumps({"status": event.status, "error": event.error})
        return f"id: {event.id}\nevent: end\ndata: {data}\n\n".encode()
    return f"id: {event.id}\nevent: chunk\ndata: {json.dumps(event.chunk)}\n\n".encode()


async def stream_handler(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    start = request.headers.get("Last-Event-ID") or request.query.get("from") or "0"
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: don't buffer the events
        }
    )
    cors = request.app.get(CORS_KEY)
    if cors:
        response.headers["Access-Control-Allow-Origin"] = cors
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    events = aread_stream(task_id, from_id=start, client=request.app[REDIS_KEY]).__aiter__()
    pending: asyncio.Task[StreamEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT)
            if not done:
                await response.write(b": keep-alive\n\n")
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                break
            pending = None
            await response.write(format_event(event))
            if event.eof:
                break
    except (ConnectionResetError, asyncio.CancelledError):
        raise  # the browser went away; aiohttp cleans up
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await events.aclose()  # type: ignore[attr-defined]
    await response.write_eof()
    return response


def add_routes(app: web.Application, redis_url: str, *, cors_origin: str | None = None) -> None:
    """Mount ``GET /streams/{task_id}`` on ``app`` (a redis.asyncio client per app)."""
    import redis.asyncio as aredis

    async def open_redis(app: web.Application) -> Any:
        app[REDIS_KEY] = aredis.Redis.from_url(redis_url)
        yield
        await app[REDIS_KEY].aclose()

    if cors_origin:
        app[CORS_KEY] = cors_origin
    app.cleanup_ctx.append(open_redis)
    app.router.add_get("/streams/{task_id}", stream_handler)


def make_app(redis_url: str, *, cors_origin: str | None = None) -> web.Application:
    app = web.Application()
    add_routes(app, redis_url, cors_origin=cors_origin)
    return app
