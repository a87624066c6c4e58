"""Fault and limit injection for the local endpoint: rate limits, error rates, latency, cold start.

Settings (all optional, changeable at runtime through ``Faults.update`` / ``POST /_bridge/faults``):

- ``rate_limits``: ``{route: [requests, seconds]}``, a token bucket per endpoint and route
  (``requests`` tokens, refilled evenly over ``seconds``); over it → 429 with ``Retry-After``.
  The ``runpod`` profile starts from RunPod's documented limits per 10 s: run 1000,
  runsync/status/stream 2000, cancel 100, purge-queue 2 (``status-sync`` shares ``status``'s
  bucket unless it has its own).
- ``error_rate``: ``{route or "*": probability}`` of answering ``error_status`` (default 500)
  instead of serving the request; ``seed`` makes the draws repeatable.
- ``latency``: seconds added before every request is served (or ``{route or "*": seconds}``).
- ``cold_start``: seconds the first job waits for a "worker" to boot; setting it makes the
  endpoints cold again, so the next job pays it.
- ``status_override``: ``{job id or "*": status}`` (or one status for every job): jobs not
  yet terminal are reported with this status by /run, /runsync, /status, /status-sync and
  /stream, whatever it is (``"WEIRD"``), to test clients against statuses outside RunPod's
  set. Only the answers change; the job runs and ends as usual, then shows its real status.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from bridge.limits import RUNPOD_LIMITS as _RUNPOD
from bridge.limits import WINDOW_SECONDS

ROUTES = ("run", "runsync", "status", "status-sync", "stream", "cancel", "retry", "purge-queue", "health")

#: The ``runpod`` profile: RunPod's documented per-endpoint limits, requests per window.
RUNPOD_LIMITS: dict[str, tuple[float, float]] = {
    route: (requests, WINDOW_SECONDS) for route, (requests, _) in _RUNPOD.items()
}


class TokenBucket:
    def __init__(self, capacity: float, period: float) -> None:
        self.capacity = float(capacity)
        self.rate = float(capacity) / float(period)  # tokens per second
        self.tokens = float(capacity)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 3600.0


@dataclass
class Faults:
    rate_limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    error_rate: dict[str, float] = field(default_factory=dict)
    error_status: int = 500
    latency: dict[str, float] = field(default_factory=dict)
    cold_start: float = 0.0
    seed: int | None = None
    status_override: dict[str, str] = field(default_factory=dict)
    _buckets: dict[tuple[str, str], TokenBucket] = field(default_factory=dict, repr=False)
    _random: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def for_profile(cls, profile: str) -> Faults:
        return cls(rate_limits=dict(RUNPOD_LIMITS) if profile == "runpod" else {})

    def update(self, **settings: Any) -> None:
        """Change settings; only the keys given change. Unknown keys raise ValueError."""
        for key, value in settings.items():
            if key == "rate_limits":
                self.rate_limits = _limits(value)
                self._buckets.clear()
            elif key == "error_rate":
                self.error_rate = _per_route(value, "error_rate")
            elif key == "latency":
                self.latency = _per_route(value, "latency")
            elif key == "error_status":
                self.error_status = int(value)
            elif key == "cold_start":
                self.cold_start = float(value or 0.0)
            elif key == "status_override":
                self.status_override = _overrides(value)
            elif key == "seed":
                self.seed = None if value is None else int(value)
                self._random.seed(self.seed)
            else:
                raise ValueError(f"unknown fault setting {key!r}")

    def describe(self) -> dict[str, Any]:
        return {
            "rate_limits": {k: list(v) for k, v in self.rate_limits.items()},
            "error_rate": dict(self.error_rate),
            "error_status": self.error_status,
            "latency": dict(self.latency),
            "cold_start": self.cold_start,
            "seed": self.seed,
            "status_override": dict(self.status_override),
        }

    def delay_for(self, route: str) -> float:
        return float(self.latency.get(route, self.latency.get("*", 0.0)))

    def throttle(self, endpoint_id: str, route: str) -> float:
        """0 to serve; otherwise seconds the caller should wait (answer 429)."""
        name = route
        if name not in self.rate_limits and route == "status-sync":
            name = "status"
        limit = self.rate_limits.get(name)
        if limit is None:
            return 0.0
        bucket = self._buckets.get((endpoint_id, name))
        if bucket is None:
            bucket = self._buckets[(endpoint_id, name)] = TokenBucket(*limit)
        return bucket.take()

    def shown_status(self, job_id: str, status: str) -> str:
        """The status to report for a job not yet terminal (``status_override``)."""
        if not self.status_override:
            return status
        return self.status_override.get(job_id, self.status_override.get("*", status))

    def inject_error(self, route: str) -> bool:
        rate = self.error_rate.get(route, self.error_rate.get("*", 0.0))
        return rate > 0 and self._random.random() < rate


def retry_after_header(seconds: float) -> str:
    # HTTP wants whole seconds; never 0, which invites a hot loop.
    return str(max(1, math.ceil(seconds)))


def _per_route(value: Any, name: str) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, (int, float)):
        return {"*": float(value)}
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    raise ValueError(f"{name} must be a number or a {{route: number}} object")


def _overrides(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"*": value}
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return {str(k): v for k, v in value.items()}
    raise ValueError('status_override must be a status string or {job id or "*": status}')


def _limits(value: Any) -> dict[str, tuple[float, float]]:
    if value is None:
        return {}
    if value == "runpod":
        return dict(RUNPOD_LIMITS)
    if not isinstance(value, dict):
        raise ValueError("rate_limits must be {route: [requests, seconds]} or 'runpod'")
    out: dict[str, tuple[float, float]] = {}
    for route, spec in value.items():
        if isinstance(spec, (int, float)):
            requests, seconds = float(spec), 1.0
        else:
            requests, seconds = (float(x) for x in spec)
        if requests <= 0 or seconds <= 0:
            raise ValueError(f"rate limit for {route!r} must be positive")
        out[str(route)] = (requests, seconds)
    return out
