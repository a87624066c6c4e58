"""Server-sent events: relay a bridge task's Redis Stream to browsers.

``GET /streams/{task_id}?token=...`` answers ``text/event-stream``; each chunk is an ``event:
chunk`` whose ``id:`` is the Redis Stream entry id, so a browser's ``EventSource`` that
reconnects sends ``Last-Event-ID`` and resumes exactly after the last chunk it saw (``?from=ID``
does the same for clients that cannot set headers). The stream ends with ``event: end``
carrying ``{"status", "error"}``; a reconnect after the end gets 204, which stops an
``EventSource`` from reconnecting. Comment lines keep idle connections open through proxies.

Reads need the token :func:`bridge.stream_token` mints (HMAC with ``BRIDGE_RELAY_SECRET``):
none is 401; an expired, forged or other task's token is 403. ``open_streams=True`` serves
anyone who knows a task id (the old behaviour; worker logs print task ids).

Every stream of the process is read by one :class:`bridge.stream_hub.StreamHub`. Served by
``bridge relay`` (127.0.0.1 by default) or mounted into your own aiohttp app with
:func:`add_routes`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from bridge.stream_hub import REDIS_DOWN, StreamHub
from bridge.stream_tokens import TokenCheck, check_stream_token, relay_secret
from bridge.streams import StreamEvent, id_order, is_entry_id

log = logging.getLogger("bridge.relay")

#: Seconds between keep-alive comments on an idle stream.
HEARTBEAT = 15.0
#: Query parameter carrying the stream token (an EventSource cannot send headers).
TOKEN_PARAM = "token"
HUB_KEY: web.AppKey[StreamHub] = web.AppKey("bridge_sse_hub", StreamHub)
SECRET_KEY: web.AppKey[Any] = web.AppKey("bridge_sse_secret", object)
CORS_KEY: web.AppKey[str] = web.AppKey("bridge_sse_cors", str)

_REFUSALS = {
    TokenCheck.MISSING: "this stream needs a token: pass ?token= minted by bridge.stream_token(task_id)",
    TokenCheck.MALFORMED: "the stream token is malformed: pass the text bridge.stream_token(task_id) returned",
    TokenCheck.EXPIRED: "the stream token has expired: mint a new one with bridge.stream_token(task_id)",
    TokenCheck.FORGED: "the stream token is not valid for this task: mint it with bridge.stream_token(task_id) "
                       "for this task id, with the relay's BRIDGE_RELAY_SECRET",
}


def format_event(event: StreamEvent) -> bytes:
    if event.eof:
        data = json.dumps({"status": event.status, "error": event.error})
        return f"id: {event.id}\nevent: end\ndata: {data}\n\n".encode()
    return f"id: {event.id}\nevent: chunk\ndata: {json.dumps(event.chunk)}\n\n".encode()


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": kind, "message": message}, status=status)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    secret = request.app.get(SECRET_KEY)
    if secret is not None:
        check = check_stream_token(task_id, request.query.get(TOKEN_PARAM), secret)
        if check is not TokenCheck.OK:
            return _error(check.http_status, "Unauthorized" if check.http_status == 401 else "Forbidden",
                          _REFUSALS[check])
    start = request.headers.get("Last-Event-ID") or request.query.get("from") or "0"
    if not is_entry_id(start):
        return _error(400, "BadRequest", "Last-Event-ID / ?from= must be a stream entry id (like 1700000000000-0)")
    hub = request.app[HUB_KEY]
    try:
        if id_order(start) != (0, 0):
            last = await hub.last_entry(task_id)
            if last is not None and last.eof and id_order(start) >= id_order(last.id):
                return web.Response(status=204)  # resumed after the end: nothing more, ever
        sub = await hub.subscribe(task_id, start)
    except REDIS_DOWN:
        return _error(503, "ServiceUnavailable", "the relay cannot reach its Redis; retry shortly")
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
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        while True:
            event = await sub.get()  # None: the hub's heartbeat, or the subscription stopped
            if event is None:
                if sub.dropped or sub.ended:
                    break  # dropped: the browser reconnects with Last-Event-ID
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(format_event(event))
            if event.eof:
                break
        await response.write_eof()
    except ConnectionResetError:
        pass  # the browser went away: not an error worth a traceback
    finally:
        hub.unsubscribe(sub)
    return response


def add_routes(app: web.Application, redis_url: str, *, cors_origin: str | None = None,
               secret: str | bytes | None = None, open_streams: bool = False) -> None:
    """Mount ``GET /streams/{task_id}`` on ``app`` with one :class:`StreamHub` for the app.

    ``secret``: the stream-token secret (default ``BRIDGE_RELAY_SECRET``); without one this
    raises :class:`bridge.errors.ConfigurationError` unless ``open_streams=True``.
    """
    app[SECRET_KEY] = None if open_streams else relay_secret(secret)

    async def run_hub(app: web.Application) -> Any:
        hub = StreamHub(redis_url, heartbeat=HEARTBEAT)
        await hub.start()
        app[HUB_KEY] = hub
        yield
        await hub.close()

    async def end_streams(app: web.Application) -> None:
        # Before the server waits for open requests: event streams would never finish.
        if HUB_KEY in app:
            app[HUB_KEY].drop_all("the server is stopping")

    if cors_origin:
        app[CORS_KEY] = cors_origin
    app.cleanup_ctx.append(run_hub)
    app.on_shutdown.append(end_streams)
    app.router.add_get("/streams/{task_id}", stream_handler)


def make_app(redis_url: str, *, cors_origin: str | None = None, secret: str | bytes | None = None,
             open_streams: bool = False) -> web.Application:
    app = web.Application()
    add_routes(app, redis_url, cors_origin=cors_origin, secret=secret, open_streams=open_streams)
    return app
