"""Per-job webhook secrets, and keeping them out of everything bridge shows.

A job's secret is ``HMAC-SHA256(receiver key, job ref)``: nothing per job needs storing to
check it, a resumed batch that re-sends a job (same idempotency key, same job) gets the same
URL, and the receiver compares in constant time. The receiver key is random, made once and
kept in Redis (or given as ``BRIDGE_WEBHOOK_KEY``). The secret travels as the ``token`` query
parameter, a name :func:`bridge.errors.scrub` already masks in any text.
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
    name = keys.webhook_secret("_receiver_key")
    await redis.set(name, secrets.token_hex(32), nx=True)
    value = await redis.get(name)
    return value if isinstance(value, bytes) else str(value).encode()
