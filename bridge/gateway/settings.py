"""Gateway settings: every ``BRIDGE_*`` knob the gateway reads, resolved once per process.

Read from the environment when a :class:`GatewaySettings` is made (never at import), so a
worker, a test or the demo can set them first. Rate budgets default to RunPod's documented
per-endpoint limits only when the base URL is RunPod's own API; other endpoints have no
budget unless ``BRIDGE_RATE_LIMITS`` says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from bridge import limits
from bridge.config import env_float, env_int, is_runpod_api
from bridge.errors import ConfigurationError
from bridge.lifecycle.settings import WaitSettings

#: The budget against RunPod's API: its documented limits (bridge.limits), plus /health,
#: which the documentation does not list, at the status route's rate.
RUNPOD_LIMITS: dict[str, tuple[int, int]] = {**limits.RUNPOD_LIMITS, "health": limits.RUNPOD_LIMITS["status"]}

WINDOW_SECONDS = limits.WINDOW_SECONDS


def parse_limits(text: str) -> dict[str, tuple[int, int]]:
    """Parse ``"status=2000:400,run=1000:200"`` (requests per 10 s : concurrent; 0 = none)."""
    limits: dict[str, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            route, spec = part.split("=", 1)
            rate, _, conc = spec.partition(":")
            limits[route.strip()] = (int(rate or 0), int(conc or 0))
        except ValueError as exc:
            raise ConfigurationError(
                f"BRIDGE_RATE_LIMITS entry {part!r} is not route=requests:concurrent",
                None, None, "BRIDGE_RATE_LIMITS, e.g. status=2000:400,run=1000:200",
            ) from exc
    return limits


def _endpoints_env() -> dict[str, dict[str, str]]:
    text = os.environ.get("BRIDGE_ENDPOINTS", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ValueError("not an object of objects")
    except ValueError as exc:
        raise ConfigurationError(
            f"BRIDGE_ENDPOINTS is not a JSON object of endpoint objects ({exc})", None, None,
            'BRIDGE_ENDPOINTS, e.g. {"llm": {"endpoint_id": "abc123", "api_key_env": "LLM_KEY"}}',
        ) from None
    return value


def _json_env(name: str) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ConfigurationError(f"{name} is not valid JSON", None, None, name) from None


def default_redis_url() -> str:
    """``BRIDGE_REDIS_URL``, else the result backend's or broker's Redis, else localhost."""
    for name in ("BRIDGE_REDIS_URL", "CELERY_RESULT_BACKEND", "CELERY_BROKER_URL"):
        value = os.environ.get(name, "")
        if value.startswith(("redis://", "rediss://", "unix://")):
            return value
    return "redis://127.0.0.1:6379/0"


@dataclass
class GatewaySettings:
    """What the gateway reads; each field names its environment variable."""

    redis_url: str = field(default_factory=default_redis_url)  # BRIDGE_REDIS_URL
    #: Waiting and retrying (long polls, poll pauses, request retries): the one
    #: :class:`~bridge.lifecycle.settings.WaitSettings` every caller uses (docs/settings.md).
    waits: WaitSettings = field(default_factory=WaitSettings.from_env)
    #: How often the gateway looks at the cancel keys of all its jobs (one MGET per round).
    cancel_check: float = field(default_factory=lambda: env_float("BRIDGE_CANCEL_CHECK", 0.25))
    #: Pooled HTTP connections per worker process (long polls hold one each).
    max_connections: int = field(default_factory=lambda: env_int("BRIDGE_MAX_CONNECTIONS", 12000))
    #: Largest accepted input, JSON-encoded (RunPod: /run 10 MB, /runsync 20 MB).
    max_input_bytes: int = field(default_factory=lambda: env_int("BRIDGE_MAX_INPUT_BYTES", 10_000_000))
    #: A submit claim older than this without a job id is taken over (its owner died).
    submit_lease: float = field(default_factory=lambda: env_float("BRIDGE_SUBMIT_LEASE", 60.0))
    #: How long journal entries and streams are kept in Redis.
    journal_ttl: int = field(default_factory=lambda: env_int("BRIDGE_JOURNAL_TTL", 7 * 86400))
    stream_maxlen: int = field(default_factory=lambda: env_int("BRIDGE_STREAM_MAXLEN", 100_000))
    rate_limits_env: str | None = field(default_factory=lambda: os.environ.get("BRIDGE_RATE_LIMITS"))
    #: Named endpoints: ``{"name": {"endpoint_id", "base_url", "api_key_env"}}`` (JSON; every
    #: field optional). ``api_key_env`` names an environment variable, never holds a key.
    endpoints: dict[str, dict[str, str]] = field(default_factory=lambda: _endpoints_env())
    #: ``s3Config`` sent with every job (JSON), read in the worker so credentials never
    #: travel in task arguments.
    s3_config: dict[str, Any] | None = field(default_factory=lambda: _json_env("BRIDGE_S3_CONFIG"))

    def limits_for(self, base_url: str) -> dict[str, tuple[int, int]]:
        """The budget for an endpoint at ``base_url``: explicit setting, else RunPod's, else none."""
        if self.rate_limits_env is not None:
            return parse_limits(self.rate_limits_env)
        return dict(RUNPOD_LIMITS) if is_runpod_api(base_url) else {}
