"""bridge's local endpoint: RunPod's serverless endpoint API on 127.0.0.1, over Python handlers.

Modules: ``server`` (the aiohttp app, several endpoints), ``routes`` (RunPod's routes and
the test-only ``/_bridge/`` routes), ``jobs`` (the job store and the runner seam),
``runner`` (the in-process handler runner), ``policies`` (options, policy rules,
profiles), ``faults`` (rate limits, error injection, latency, cold start), ``webhooks``,
``loading`` (handler specs), ``bodies`` (strict JSON in and out, body limits and timeouts).
See docs/local-endpoint.md.

Handlers report progress with :func:`progress_update` (same call as
``runpod.serverless.progress_update``).
"""

from __future__ import annotations

from typing import Any

from bridge.local.runner import progress_update

__all__ = ["LocalServer", "progress_update"]


def __getattr__(name: str) -> Any:
    # The server pulls in aiohttp; handlers importing progress_update need not.
    if name == "LocalServer":
        from bridge.local.server import LocalServer

        return LocalServer
    raise AttributeError(f"module 'bridge.local' has no attribute {name!r}")
