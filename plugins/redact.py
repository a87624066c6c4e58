"""``redact``: remove configured fields, and anything that looks like a credential, from
values before they reach logs, task meta or results meta.

Options: ``fields`` (key names, case-insensitive, matched at any depth, added to the
built-in credential names), ``mask`` (default ``"***"``), ``endpoints`` (default all).
Enable with any option, e.g. ``BRIDGE_PLUGIN_REDACT_FIELDS=ssn,email`` or
``BRIDGE_PLUGIN_REDACT_ENABLED=1``.

It implements ``bridge_redact`` only: it never changes the input sent to the endpoint or
the task's result. :func:`redact` is the same logic as a plain function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from bridge import hookimpl
from bridge.errors import scrub

from ._options import as_list, endpoint_filter

__all__ = ["DEFAULT_FIELDS", "RedactPlugin", "redact"]

#: Key names whose values are always removed (compared lower-case, ``-`` read as ``_``).
DEFAULT_FIELDS = frozenset({
    "api_key", "apikey", "x_api_key", "authorization", "auth", "password", "passwd", "secret",
    "client_secret", "token", "access_token", "refresh_token", "id_token", "private_key",
    "accesssecret", "access_secret", "accessid", "aws_secret_access_key", "cookie", "set_cookie",
})

# Values that look like keys whatever their field is called; bridge.errors.scrub covers
# bearer tokens, RunPod keys and "key=value" forms on top of these.
_KEY_LIKE = [
    re.compile(r"\b(?:sk|pk|rk)-(?:proj-)?[A-Za-z0-9_-]{16,}"),  # OpenAI-style keys
    re.compile(r"\b(?:rpa|rps|rp)_[A-Za-z0-9]{16,}"),  # RunPod keys
    re.compile(r"\b(?:ghp|gho|ghu|ghs|github_pat)_[A-Za-z0-9_]{20,}"),  # GitHub tokens
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
]
_MAX_DEPTH = 64


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")


def redact(value: Any, fields: Iterable[str] = (), *, mask: str = "***") -> Any:
    """A copy of ``value`` with ``fields`` (and :data:`DEFAULT_FIELDS`) masked at any depth and
    key-like substrings of every string masked. Containers are copied, never mutated."""
    names = DEFAULT_FIELDS | {_norm(f) for f in fields}
    return _redact(value, names, mask, 0)


def _redact(value: Any, names: frozenset[str], mask: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return mask  # fail closed on absurdly deep values
    if isinstance(value, str):
        return _redact_text(value, mask)
    if isinstance(value, Mapping):
        return {
            key: mask if isinstance(key, str) and _norm(key) in names else _redact(item, names, mask, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        items = [_redact(item, names, mask, depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _redact_text(text: str, mask: str) -> str:
    for pattern in _KEY_LIKE:
        text = pattern.sub(mask, text)
    return scrub(text).replace("***", mask) if mask != "***" else scrub(text)


class RedactPlugin:
    """The registered plugin object; see the module docstring for options."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.fields = frozenset(_norm(f) for f in as_list(options.get("fields")))
        self.names = DEFAULT_FIELDS | self.fields
        self.mask = str(options.get("mask", "***"))
        self.endpoints = endpoint_filter(options)

    @hookimpl
    def bridge_redact(self, ctx: Any, value: Any) -> Any:
        if self.endpoints is not None and ctx.endpoint_id not in self.endpoints:
            return None
        return _redact(value, self.names, self.mask, 0)
