"""Where settings come from: an explicit argument, then a ``bridge.*`` module default, then
the environment. Read when an object is made, never at import, so tests and users can change
them at run time (mirrors ``runpod.api_key`` / ``runpod.endpoint_url_base``).
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from bridge.errors import ConfigurationError

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"


def resolve_api_key(api_key: str | None = None) -> str | None:
    """The argument, else ``bridge.api_key``, else ``RUNPOD_API_KEY``; None when none is set."""
    if api_key:
        return api_key
    import bridge

    return getattr(bridge, "api_key", None) or os.environ.get("RUNPOD_API_KEY") or None


def resolve_base_url(base_url: str | None = None) -> str:
    """The argument, else ``bridge.endpoint_url_base``, else ``RUNPOD_ENDPOINT_BASE_URL``,
    else RunPod's own ``https://api.runpod.ai/v2``. The result has no trailing slash."""
    if not base_url:
        import bridge

        base_url = (
            getattr(bridge, "endpoint_url_base", None)
            or os.environ.get("RUNPOD_ENDPOINT_BASE_URL")
            or DEFAULT_BASE_URL
        )
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigurationError(
            f"base URL {base_url!r} is not an http(s) URL",
            None,
            None,
            "base_url, bridge.endpoint_url_base or RUNPOD_ENDPOINT_BASE_URL (e.g. http://127.0.0.1:8000/v2)",
        )
    return base_url.rstrip("/")


def is_runpod_api(base_url: str) -> bool:
    """True for RunPod's hosted API, whose documented rate limits bridge applies by default."""
    host = urlparse(base_url).hostname or ""
    return host == "api.runpod.ai" or host.endswith(".runpod.ai")


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ConfigurationError(f"{name}={value!r} is not a number", None, None, name) from exc


def env_int(name: str, default: int) -> int:
    return int(env_float(name, default))


#: Seconds a job may keep a status outside RunPod's set before a wait gives up.
UNKNOWN_STATUS_TIMEOUT = 300.0


def unknown_status_timeout() -> float:
    """``BRIDGE_UNKNOWN_STATUS_TIMEOUT`` (default 300 s): how long a wait on a job (the
    client's, the gateway's) goes on while the job shows a status outside RunPod's
    documented set, before it ends with :class:`bridge.errors.UnknownStatus`."""
    value = env_float("BRIDGE_UNKNOWN_STATUS_TIMEOUT", UNKNOWN_STATUS_TIMEOUT)
    if value < 0 or value != value:  # negative or NaN
        raise ConfigurationError(
            f"BRIDGE_UNKNOWN_STATUS_TIMEOUT={value!r} must be zero or more seconds", None, None,
            "BRIDGE_UNKNOWN_STATUS_TIMEOUT",
        )
    return value
