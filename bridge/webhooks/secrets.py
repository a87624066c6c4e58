"""Per-job webhook secrets, and keeping them out of everything bridge shows.

A job's secret is ``HMAC-SHA256(receiver key, job ref)``: nothing per job needs storing to
check it, a resumed batch that re-sends a job (same idempotency key, same job) gets the same
URL, and the receiver compares in constant time. The receiver key is random, made once and
kept in Redis (or given as ``BRIDGE_WEBHOOK_KEY``). The secret travels as the ``token`` query
parameter, a name :func:`bridge.errors.scrub` already masks in any text.

The receiver holds the key in :class:`ReceiverKeys`, which re-reads Redis when a token does
not match: a key that changed (made anew after it vanished from Redis) is picked up without a
restart, and one that vanished is put back so the URLs already handed out keep working.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge import keys

TOKEN_PARAM = "token"


def job_secret(key: bytes, ref: str) -> str:
    return hmac.new(key, ref.encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, ref: str, token: str | None) -> bool:
    """Constant-time check of a presented token."""
    if not token:
        return False
    return hmac.compare_digest(job_secret(key, ref).encode(), token.encode())


def webhook_url(public_url: str, key: bytes, ref: str) -> str:
    return f"{public_url.rstrip('/')}/webhooks/{ref}?{TOKEN_PARAM}={job_secret(key, ref)}"


def strip_secret(url: str) -> str:
    """The URL without its token (what may be shown, logged or stored)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != TOKEN_PARAM]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def strip_body(body: dict[str, Any]) -> dict[str, Any]:
    """A status or webhook body with the echoed ``webhook`` URL stripped of its secret.

    The gateway calls this on every status body it stores or returns (RunPod echoes the
    webhook URL back in status bodies).
    """
    hook = body.get("webhook")
    if isinstance(hook, str) and TOKEN_PARAM in hook:
        body = dict(body)
        body["webhook"] = strip_secret(hook)
    return body


async def receiver_key(redis: Any) -> bytes:
    """``BRIDGE_WEBHOOK_KEY``, else the random key kept in Redis (made on first use)."""
    configured = os.environ.get("BRIDGE_WEBHOOK_KEY")
    if configured:
        return configured.encode()
    name = _key_name()
    await redis.set(name, secrets.token_hex(32), nx=True)
    value = await redis.get(name)
    return value if isinstance(value, bytes) else str(value).encode()


def _key_name() -> str:
    return keys.webhook_secret("_receiver_key")


class ReceiverKeys:
    """The keys a receiver accepts tokens of: the current one and the few it saw before it
    (deliveries for jobs submitted before a key change still verify)."""

    #: Keys remembered, newest first.
    KEEP = 4

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.keys: list[bytes] = []

    async def load(self) -> None:
        self._remember(await receiver_key(self.redis))

    def _remember(self, key: bytes) -> None:
        if key in self.keys:
            self.keys.remove(key)
        self.keys.insert(0, key)
        del self.keys[self.KEEP:]

    async def verify(self, ref: str, token: str | None) -> bool:
        """Whether ``token`` is ``ref``'s secret under a known key; on a miss, re-read the
        key from Redis once (it may have changed since it was read)."""
        if not token:
            return False
        if any(verify(key, ref, token) for key in self.keys):
            return True
        if os.environ.get("BRIDGE_WEBHOOK_KEY"):
            return False  # a configured key does not change at run time
        name = _key_name()
        value = await self.redis.get(name)
        if value is None and self.keys:
            # Vanished (flushed, or Redis restarted without persistence): restore ours.
            await self.redis.set(name, self.keys[0], nx=True)
            value = await self.redis.get(name)
        if value is None:
            return False
        current = value if isinstance(value, bytes) else str(value).encode()
        if current in self.keys:
            return False
        self._remember(current)
        return verify(current, ref, token)
