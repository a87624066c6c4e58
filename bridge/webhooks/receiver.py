"""The webhook receiver: ``POST /webhooks/{ref}?token=...`` (aiohttp).

A verified delivery is handed to whoever registered ``ref`` (a batch, a waiting task) by
pushing it to their Redis inbox list; the first delivery wins and repeats (RunPod retries,
replays) are answered 200 and dropped. A forged or missing token gets 403 and changes nothing.
When the caller gave their own webhook at registration, the verified body (secret stripped)
is relayed to it. Serve it with ``bridge gateway --webhooks`` or mount :func:`add_routes`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bridge import keys
from bridge.webhooks.secrets import TOKEN_PARAM, receiver_key, strip_body, verify

log = logging.getLogger("bridge.webhooks")

REDIS: web.AppKey[Any] = web.AppKey("bridge_webhooks_redis", object)
KEY: web.AppKey[bytes] = web.AppKey("bridge_webhooks_key", bytes)
_RELAYS: set[asyncio.Future[None]] = set()
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("bridge_webhooks_session", aiohttp.ClientSession)


def registration_key(ref: str) -> str:
    return keys.webhook_secret(ref)


def inbox_key(inbox: str) -> str:
    return keys.webhook_secret(f"inbox:{inbox}")


async def deliver(redis: Any, key: bytes, ref: str, token: str | None, body: dict[str, Any]) -> tuple[int, str]:
    """Verify and hand over one delivery: (HTTP status, outcome). Outcomes: delivered,
    duplicate, forbidden, unknown."""
    if not verify(key, ref, token):
        return 403, "forbidden"
    reg = await redis.hgetall(registration_key(ref))
    if not reg:
        return 404, "unknown"
    reg = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
           for k, v in reg.items()}
    if not await redis.hsetnx(registration_key(ref), "delivered", "1"):
        return 200, "duplicate"
    clean = strip_body(body)
    await redis.lpush(inbox_key(reg["inbox"]), json.dumps({"ref": ref, "body": clean}))
    await redis.expire(inbox_key(reg["inbox"]), int(reg.get("ttl", 86400)))
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


async def webhook_handler(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body is not a JSON object"}, status=400)
    status, outcome = await deliver(request.app[REDIS], request.app[KEY], ref,
                                    request.query.get(TOKEN_PARAM), body)
    if outcome.startswith("relay:"):
        task = asyncio.ensure_future(_relay(request.app[SESSION], outcome[6:], strip_body(body)))
        _RELAYS.add(task)  # keep a reference until it is done
        task.add_done_callback(_RELAYS.discard)
        outcome = "delivered"
    if status == 403:
        log.warning("webhook for %s rejected: bad token", ref)  # never the token itself
    return web.json_response({"outcome": outcome}, status=status)


def add_routes(app: web.Application, redis_url: str) -> None:
    """Mount ``POST /webhooks/{ref}`` on ``app``."""
    import redis.asyncio as aredis

    async def context(app: web.Application) -> Any:
        app[REDIS] = aredis.Redis.from_url(redis_url)
        app[KEY] = await receiver_key(app[REDIS])
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()
        await app[REDIS].aclose()

    app.cleanup_ctx.append(context)
    app.router.add_post("/webhooks/{ref}", webhook_handler)


#: Largest webhook body accepted: RunPod outputs go up to 20 MB (aiohttp's default is 1 MB).
MAX_BODY = 32 * 2**20


class SafeAccessLogger(AbstractAccessLogger):
    """Access log lines without query strings: a webhook URL's query carries its secret."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %.3fs', request.remote, request.method, request.path,
                         response.status, time)


def make_app(redis_url: str) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    add_routes(app, redis_url)
    return app
