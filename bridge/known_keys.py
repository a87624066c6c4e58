"""The API keys bridge knows, and masking them: every key an endpoint was made with in this
process is remembered (:func:`remember_key`), and any answer, error text or log line that
repeats one gets ``***`` in its place (:func:`scrub_value`). :mod:`bridge.wire` applies it to
every answer; plugins holding other secrets may remember them too."""

from __future__ import annotations

import re
from typing import Any

from bridge import errors
from bridge.config import resolve_api_key

__all__ = ["MASK", "MIN_SCRUBBED_KEY", "holds_key", "known_keys", "remember_key", "safe_text", "scrub_value"]

#: Shorter keys are not scrubbed from outputs: they would mangle ordinary text.
MIN_SCRUBBED_KEY = 8
#: What a known key is replaced with in outputs, errors and logs.
MASK = "***"

#: Keys JSON always writes as they are (a key with other characters may appear escaped).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._~+=:-]+")

#: Every API key a Wire was made with in this process (RUNPOD_API_KEY, bridge.api_key, named
#: endpoints' keys), longest first so a key containing another is masked whole.
_known: tuple[str, ...] = ()
_known_bytes: tuple[bytes, ...] = ()
_escapable = False  # some key may appear JSON-escaped in raw answers


def remember_key(key: str | None) -> None:
    """Add ``key`` to the keys :func:`scrub_value` masks (bridge calls this for every key it
    sends; plugins holding other secrets may call it too)."""
    global _known, _known_bytes, _escapable
    if not key or len(key) < MIN_SCRUBBED_KEY or key in _known:
        return
    _known = tuple(sorted({*_known, key}, key=len, reverse=True))
    _known_bytes = tuple(k.encode() for k in _known)
    _escapable = _escapable or not _PLAIN_KEY.fullmatch(key)


def known_keys() -> tuple[str, ...]:
    """The keys bridge masks: every one remembered, and the current default key."""
    remember_key(resolve_api_key())
    return _known


def scrub_value(value: Any, secrets: tuple[str, ...] | None = None) -> Any:
    """``value`` (any JSON value) with every known API key replaced by ``***``, in strings and
    object keys at any depth; the same object when nothing was found (nothing is copied)."""
    found = known_keys() if secrets is None else secrets
    return _scrubbed(value, found) if found else value


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrubbed(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _mask(value, secrets)
    if isinstance(value, dict):
        out, changed = {}, False
        for k, v in value.items():
            k2 = _mask(k, secrets) if isinstance(k, str) else k
            v2 = _scrubbed(v, secrets)
            changed = changed or k2 is not k or v2 is not v
            out[k2] = v2
        return out if changed else value
    if isinstance(value, list):
        items = [_scrubbed(v, secrets) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def holds_key(raw: bytes) -> bool:
    """Whether a raw JSON answer may contain a known key: a C-speed search, so answers
    without one (nearly all) are never walked."""
    known_keys()
    return _escapable or any(k in raw for k in _known_bytes)


#: Credentials in a URL (``http://user:pass@host``) are cut from any text we repeat.
_USERINFO = re.compile(r"//[^/@\s]+@")
#: How much outside text an error repeats.
EXCERPT = 300


def safe_text(raw: bytes | str) -> str:
    """Outside text fit to repeat: known keys, credentials and URL userinfo masked, cut short."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return _USERINFO.sub("//***@", errors.scrub(text.strip(), *known_keys()))[:EXCERPT]
