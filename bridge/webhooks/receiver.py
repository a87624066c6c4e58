"""The webhook receiver: ``POST /webhooks/{ref}?token=...`` (aiohttp).

The token is checked before a byte of the body is read: a forged or missing one gets 403 and
changes nothing, whatever it sends. Bodies are capped at :data:`MAX_BODY` (a 20 MB result,
the largest an endpoint returns, and its status fields), checked on Content-Length first and
while reading. A verified delivery is handed to whoever registered ``ref`` (a batch, a
waiting task) by pushing it to their Redis inbox list. Each job's terminal delivery is taken
once: repeats (RunPod retries, replays of a captured request, even after the ref was
registered again) are answered 200 ``duplicate`` and dropped. When the caller gave their own
webhook at registration, the verified body (secret stripped) is relayed to it. Nothing from
the request's query or path reaches a log line unescaped. Serve it with ``bridge relay
--webhooks`` or mount :func:`add_routes`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bridge import keys
from bridge.webhooks.secrets import TOKEN_PARAM, ReceiverKeys, strip_body

log = logging.getLogger("bridge.webhooks")

REDIS: web.AppKey[Any] = web.AppKey("bridge_webhooks_redis", object)
KEYS: web.AppKey[ReceiverKeys] = web.AppKey("bridge_webhooks_keys", ReceiverKeys)
_RELAYS: set[asyncio.Future[None]] = set()
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("bridge_webhooks_session", aiohttp.ClientSession)


def registration_key(ref: str) -> str:
    return keys.webhook_secret(ref)


def inbox_key(inbox: str) -> str:
    return keys.webhook_secret(f"inbox:{inbox}")


def seen_key(ref: str, body: dict[str, Any]) -> str:
    """Marks one job's delivery as taken: the job id and status, or the whole body without them."""
    if body.get("id") is not None:
        what = f"{body.get('id')}\n{body.get('status')}"
    else:
        what = json.dumps(body, sort_keys=True, default=str)
    return keys.webhook_secret(f"seen:{ref}:{hashlib.sha256(what.encode()).hexdigest()[:32]}")


#: Largest webhook body accepted: a 20 MB result (the local endpoint's limit,
#: bridge.local.worker_api.MAX_RESULT_BYTES, and RunPod's) plus 64 KB for the status fields
#: around it. Enforced here whatever the app's client_max_size (aiohttp's default is 1 MB).
MAX_BODY = 20 * 2**20 + 64 * 2**10


async def deliver(redis: Any, ref: str, body: dict[str, Any]) -> tuple[int, str]:
    """Hand over one verified delivery: (HTTP status, outcome). Outcomes: delivered,
    duplicate, unknown, or ``relay:URL``."""
    reg = await redis.hgetall(registration_key(ref))
    if not reg:
        return 404, "unknown"
    reg = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
           for k, v in reg.items()}
    ttl = int(reg.get("ttl", 86400))
    if not await redis.set(seen_key(ref, body), "1", nx=True, ex=max(ttl, 86400)):
        return 200, "duplicate"
    clean = strip_body(body)
    await redis.lpush(inbox_key(reg["inbox"]), json.dumps({"ref": ref, "body": clean}))
    await redis.expire(inbox_key(reg["inbox"]), ttl)
    return 200, "delivered" if not reg.get("relay") else f"relay:{reg['relay']}"


async def _relay(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    for attempt in range(3):
        try:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status < 300:
                    return
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(2.0 * (attempt + 1))
    log.warning("relaying a webhook to the caller's URL failed after 3 tries")


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one log line: control characters escaped, quotes added, cut short."""
    return ascii(text[:limit])


async def read_capped(request: web.Request, limit: int = MAX_BODY) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (stops reading there)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(status: int, outcome: str, message: str) -> web.Response:
    response = web.json_response({"outcome": outcome, "error": message}, status=status)
    response.force_close()  # the unread body is not worth keeping the connection for
    return response


async def webhook_handler(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    # The token first: nothing is read, parsed or stored for a request that cannot be ours.
    if not await request.app[KEYS].verify(ref, request.query.get(TOKEN_PARAM)):
        log.warning("webhook for %s rejected: bad or missing token", printable(ref))  # never the token
        return _refuse(403, "forbidden", "bad or missing token")
    raw = await read_capped(request)
    if raw is None:
        log.warning("webhook for %s rejected: body over %d bytes", printable(ref), MAX_BODY)
        return _refuse(413, "too_large", f"body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body is not a JSON object"}, status=400)
    status, outcome = await deliver(request.app[REDIS], ref, body)
    if outcome.startswith("relay:"):
        task = asyncio.ensure_future(_relay(request.app[SESSION], outcome[6:], strip_body(body)))
        _RELAYS.add(task)  # keep a reference until it is done
        task.add_done_callback(_RELAYS.discard)
        outcome = "delivered"
    return web.json_response({"outcome": outcome}, status=status)


def add_routes(app: web.Application, redis_url: str) -> None:
    """Mount ``POST /webhooks/{ref}`` on ``app`` (bodies capped at :data:`MAX_BODY` whatever
    the app's ``client_max_size``)."""
    import redis.asyncio as aredis

    async def context(app: web.Application) -> Any:
        app[REDIS] = aredis.Redis.from_url(redis_url)
        app[KEYS] = ReceiverKeys(app[REDIS])
        await app[KEYS].load()
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()
        await app[REDIS].aclose()

    app.cleanup_ctx.append(context)
    app.router.add_post("/webhooks/{ref}", webhook_handler)


class SafeAccessLogger(AbstractAccessLogger):
    """Access log lines without query strings (a webhook's or a stream's query carries its
    secret) and with the path as sent, still percent-encoded: a ``%0A`` cannot forge a line."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %.3fs', request.remote, request.method,
                         printable(request.rel_url.raw_path, 500)[1:-1], response.status, time)


def make_app(redis_url: str) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    add_routes(app, redis_url)
    return app
