"""Signed, expiring per-task tokens for reading a task's stream through ``bridge relay``.

Your app server, which knows who may see which task, mints one and hands it to the browser::

    token = bridge.stream_token(task_id, ttl=3600)        # BRIDGE_RELAY_SECRET must be set
    # browser: new EventSource(`/streams/${taskId}?token=${token}`)

A token is ``{expiry}.{signature}``: the Unix time it stops working and
``HMAC-SHA256(BRIDGE_RELAY_SECRET, "bridge-stream\\n{task_id}\\n{expiry}")`` (URL-safe base64).
It opens one task's stream only, until its expiry; nothing is stored, so the relay and the
app server need only share the secret. It goes in the query string because an
``EventSource`` cannot send headers; the relay never logs query strings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from enum import Enum

from bridge.errors import ConfigurationError

#: The environment variable holding the secret shared by the relay and whoever mints tokens.
SECRET_ENV = "BRIDGE_RELAY_SECRET"
#: Shortest secret accepted: HMAC keys shorter than this are guessable offline.
MIN_SECRET_BYTES = 16


class TokenCheck(Enum):
    """Outcome of :func:`check_stream_token`; ``http_status`` is what the relay answers."""

    OK = "ok"
    MISSING = "missing"
    MALFORMED = "malformed"
    EXPIRED = "expired"
    FORGED = "forged"

    @property
    def http_status(self) -> int:
        return {"ok": 200, "missing": 401}.get(self.value, 403)


def relay_secret(secret: str | bytes | None = None) -> bytes:
    """``secret``, else ``BRIDGE_RELAY_SECRET``; raises :class:`ConfigurationError` when
    neither is set or the secret is too short to be safe."""
    value = secret if secret is not None else os.environ.get(SECRET_ENV, "")
    raw = value.encode() if isinstance(value, str) else value
    if not raw:
        raise ConfigurationError(
            f"no stream token secret: {SECRET_ENV} is not set", None, None,
            f"set {SECRET_ENV} to the same random value (e.g. `openssl rand -hex 32`) for the relay "
            "and the app server that mints tokens",
        )
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{SECRET_ENV} is {len(raw)} bytes long; at least {MIN_SECRET_BYTES} are needed", None, None,
            f"{SECRET_ENV}: use a long random value, e.g. `openssl rand -hex 32`",
        )
    return raw


def _signature(secret: bytes, task_id: str, expiry: int) -> str:
    message = f"bridge-stream\n{task_id}\n{expiry}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def stream_token(task_id: str, ttl: float = 3600, *, secret: str | bytes | None = None,
                 now: float | None = None) -> str:
    """A token that lets its holder read ``task_id``'s stream for ``ttl`` seconds.

    ``secret``: defaults to ``BRIDGE_RELAY_SECRET`` (the relay must use the same one).
    """
    if ttl <= 0:
        raise ConfigurationError(f"stream token ttl must be positive, got {ttl}", None, None, "the ttl argument")
    expiry = int((time.time() if now is None else now) + ttl)
    return f"{expiry}.{_signature(relay_secret(secret), task_id, expiry)}"


def check_stream_token(task_id: str, token: str | None, secret: bytes, *, now: float | None = None) -> TokenCheck:
    """Whether ``token`` opens ``task_id``'s stream now (constant-time signature check)."""
    if not token:
        return TokenCheck.MISSING
    expiry_text, dot, signature = token.partition(".")
    if not dot or not expiry_text.isdigit() or len(expiry_text) > 12 or not signature:
        return TokenCheck.MALFORMED
    expected = _signature(secret, task_id, int(expiry_text))
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return TokenCheck.FORGED
    if int(expiry_text) <= (time.time() if now is None else now):
        return TokenCheck.EXPIRED
    return TokenCheck.OK
