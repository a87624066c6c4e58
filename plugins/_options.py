"""Parsing helpers shared by the first-party plugins' options (env values arrive as text)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.errors import ConfigurationError


def as_list(value: Any) -> list[str]:
    """``"a,b"``, ``["a", "b"]`` or ``None`` → a list of non-empty strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [str(part) for part in value]
    return [str(value)]


def as_float(plugin: str, options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"plugin {plugin!r}: option {name!r}={value!r} is not a number", None, None,
            f"BRIDGE_PLUGIN_{plugin.upper()}_{name.upper()}",
        ) from exc


def endpoint_filter(options: Mapping[str, Any]) -> frozenset[str] | None:
    """The ``endpoints`` option: the endpoint ids a plugin applies to; None means all."""
    names = as_list(options.get("endpoints"))
    if not names or "*" in names:
        return None
    return frozenset(names)
