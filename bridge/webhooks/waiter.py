"""Waiting for jobs by webhook: register a job ref, submit with its URL, await the delivery.

One listener per :class:`WebhookWaiter` pops its Redis inbox (BLPOP) and completes the
matching futures, so a batch of any size holds two Redis connections. A webhook that never
comes (lost, receiver down) is covered by slow polling: after ``fallback_after`` seconds a
plain status look every ``fallback_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from bridge import errors
from bridge.redis_clients import athrough_outage
from bridge.webhooks.receiver import inbox_key, registration_key
from bridge.webhooks.secrets import receiver_key, webhook_url
from bridge.wire import scrub_value

log = logging.getLogger("bridge.webhooks")


#: Seconds a worker trusts the receiver key it read before reading it again.
KEY_RECHECK = 10.0


@dataclass(eq=False, repr=False)  # identity, and no repr that could show the Redis URL's password
class WebhookWaiter:
    """Registers jobs with the webhook receiver and hands their verified deliveries over:
    to :meth:`wait_for` (a batch's jobs: the lifecycle's wait ends with the body, looking only
    every ``fallback_interval`` s after ``fallback_after`` s) or to :attr:`on_delivery` (the
    gateway's), so a job needs no status requests while webhooks arrive.

    ``WebhookWaiter(public_url, redis_url, *, fallback_after=60.0, fallback_interval=60.0,
    relay=None, ttl=7 days)``."""

    public_url: str
    redis_url: str
    _: KW_ONLY
    fallback_after: float = 60.0
    fallback_interval: float = 60.0
    relay: str | None = None
    ttl: int = 7 * 86400
    #: Called with (ref, body) for deliveries nobody awaits with :meth:`wait_for` (the
    #: gateway's Watches end that task's wait this way).
    on_delivery: Callable[[str, dict[str, Any]], None] | None = field(default=None, init=False)
    inbox: str = field(default_factory=lambda: uuid.uuid4().hex, init=False)
    _redis: Any = field(default=None, init=False)
    _key: bytes | None = field(default=None, init=False)
    _key_at: float = field(default=0.0, init=False)
    _futures: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict, init=False)
    _listener: asyncio.Task[None] | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def _ready(self) -> None:
        async with self._lock:
            if self._redis is None:
                from bridge.redis_clients import riding_async_client

                client = riding_async_client(self.redis_url)  # registrations ride a Redis restart
                self._key, self._key_at = await receiver_key(client), time.monotonic()
                self._redis = client
            if self._listener is None or self._listener.done():
                self._listener = asyncio.ensure_future(self._listen())

    @staticmethod
    def ref(batch_id: str, index: int) -> str:
        return f"b-{batch_id}-{index}"

    async def url_for(self, ref: str, relay: str | None = None, *, await_here: bool = True) -> str:
        """Register ``ref`` (any unique job reference, e.g. a Celery task id) and return the
        webhook URL to submit its job with; ``relay``: the caller's own webhook, if any.
        ``await_here=False``: the delivery goes to :attr:`on_delivery` instead of
        :meth:`wait_for`."""
        await self._ready()
        if time.monotonic() - self._key_at > KEY_RECHECK:
            # The receiver re-reads its key when it changes (or restores a vanished one):
            # follow it, or every URL handed out from now on would be refused with 403.
            self._key, self._key_at = await receiver_key(self._redis), time.monotonic()
        assert self._key is not None
        mapping = {"inbox": self.inbox, "ttl": str(self.ttl)}
        relay = relay or self.relay
        if relay:
            mapping["relay"] = relay
        async def register() -> Any:
            pipe = self._redis.pipeline()
            pipe.hset(registration_key(ref), mapping=mapping)
            pipe.hdel(registration_key(ref), "delivered")
            pipe.expire(registration_key(ref), self.ttl)
            return await pipe.execute()

        await athrough_outage(register, self.redis_url)
        if await_here:
            self._futures.setdefault(ref, asyncio.get_running_loop().create_future())
        return webhook_url(self.public_url, self._key, ref)

    async def wait_for(self, ref: str, timeout: float | None) -> dict[str, Any] | None:
        """The verified webhook body for ``ref`` (secret stripped), or None after ``timeout``."""
        await self._ready()
        future = self._futures.setdefault(ref, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            return None

    async def forget(self, ref: str) -> None:
        """Drop ``ref``'s registration (its job ended; later deliveries get 404)."""
        self._futures.pop(ref, None)
        if self._redis is not None:
            await self._redis.delete(registration_key(ref))

    async def _listen(self) -> None:
        from bridge.redis_clients import async_client

        # Health-checked, keepalive; a socket timeout above the BLPOP's 2 s.
        blocking = async_client(self.redis_url, socket_timeout=10.0)
        try:
            while True:
                try:
                    # Through a Redis restart: waits (one warning per outage), then reads on.
                    item = await athrough_outage(
                        lambda: blocking.blpop([inbox_key(self.inbox)], timeout=2), self.redis_url)
                except errors.RedisUnavailable as exc:
                    log.warning("webhook inbox read failed (%s); retrying", type(exc).__name__)
                    continue
                if item is None:
                    continue
                message = json.loads(item[1])
                body = scrub_value(message["body"])  # API keys an endpoint echoed: masked
                future = self._futures.get(message["ref"])
                if future is not None and not future.done():
                    future.set_result(body)
                elif future is None and self.on_delivery is not None:
                    self.on_delivery(message["ref"], body)
        finally:
            await blocking.aclose()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()
