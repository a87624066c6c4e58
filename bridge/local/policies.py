"""Per-endpoint options and the job ``policy`` rules (executionTimeout, ttl, lowPriority, waits).

Two profiles: ``local`` (the default: any positive value is accepted, so tests can use
tiny timeouts) and ``runpod`` (RunPod's documented bounds: executionTimeout 5 s..7 d,
ttl 10 s..7 d, runsync ``wait`` 1..300 s, plus its rate limits, see ``faults``).
Values outside the bounds are clamped, the way a caller's too-small timeout would still
run on RunPod rather than be refused (the real behaviour is undocumented).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROFILES = ("local", "runpod")
_WEEK = 7 * 24 * 3600.0


class PolicyError(ValueError):
    """A request's policy is malformed; the route answers 400 with this text."""


@dataclass
class EndpointOptions:
    """How one endpoint behaves. Times are in seconds."""

    return_aggregate_stream: bool = False
    workers: int = 64
    retention: float = 1800.0  # /run results: 30 min
    sync_retention: float = 60.0  # /runsync results: 1 min
    execution_timeout: float = 600.0  # default policy.executionTimeout: 10 min
    ttl: float = 86400.0  # default policy.ttl: 24 h
    runsync_wait: float = 90.0  # default ?wait of /runsync
    max_run_bytes: int = 10 * 1024 * 1024
    max_runsync_bytes: int = 20 * 1024 * 1024


def check_profile(profile: str | None) -> str:
    name = profile or "local"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return name


def _ms(policy: dict[str, Any], key: str) -> float | None:
    value = policy.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise PolicyError(f"policy.{key} must be a positive number of milliseconds, got {value!r}")
    return float(value) / 1000.0


def apply_policy(policy: Any, options: EndpointOptions, profile: str) -> tuple[float, float, bool]:
    """(execution_timeout s, ttl s, low_priority) for a request's ``policy``."""
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        raise PolicyError("policy must be a JSON object")
    execution = _ms(policy, "executionTimeout") or options.execution_timeout
    ttl = _ms(policy, "ttl") or options.ttl
    low = policy.get("lowPriority", False)
    if not isinstance(low, bool):
        raise PolicyError(f"policy.lowPriority must be true or false, got {low!r}")
    if profile == "runpod":
        execution = min(max(execution, 5.0), _WEEK)
        ttl = min(max(ttl, 10.0), _WEEK)
    return execution, ttl, low


def runsync_wait(raw: str | None, options: EndpointOptions, profile: str) -> float:
    """Seconds /runsync blocks, from its ``?wait=`` (ms)."""
    if raw is None or raw == "":
        return options.runsync_wait
    try:
        wait = float(raw) / 1000.0
    except ValueError:
        raise PolicyError(f"wait must be milliseconds, got {raw!r}") from None
    if profile == "runpod":
        return min(max(wait, 1.0), 300.0)
    return max(wait, 0.0)


def poll_wait(raw: str | None, default: float = 0.0, limit: float = 300.0) -> float:
    """Seconds a long poll (``/status-sync``, ``/stream``) may hold, from ``?wait=`` (ms)."""
    if raw is None or raw == "":
        return default
    try:
        return min(max(float(raw) / 1000.0, 0.0), limit)
    except ValueError:
        raise PolicyError(f"wait must be milliseconds, got {raw!r}") from None
