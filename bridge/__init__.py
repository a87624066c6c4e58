"""bridge: a gateway between Celery and RunPod-style serverless endpoints.

Public names are loaded lazily so that ``import bridge`` stays cheap in Celery workers and
the CLI. ``bridge.api_key`` and ``bridge.endpoint_url_base`` mirror ``runpod.api_key`` and
``runpod.endpoint_url_base``: module defaults read whenever an endpoint is made.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Module default API key (like ``runpod.api_key``); ``RUNPOD_API_KEY`` when None.
api_key: str | None = None
#: Module default base URL (like ``runpod.endpoint_url_base``); env or RunPod's when None.
endpoint_url_base: str | None = None

_EXPORTS: dict[str, str] = {
    # client
    "Endpoint": "bridge.client.sync",
    "Job": "bridge.client.sync",
    "AsyncioEndpoint": "bridge.client.aio",
    "AsyncioJob": "bridge.client.aio",
    # errors
    "BridgeError": "bridge.errors",
    "JobRejected": "bridge.errors",
    # plugins
    "hookimpl": "bridge.hookspecs",
    "JobStatus": "bridge.job_status",
    # celery
    "install": "bridge.worker",
    # the chainable tasks, so `chain(prep.s(x), bridge.run.s("ep"), post.s())` reads as
    # written; the others are in bridge.tasks (bridge.status is also the old job-state module)
    "run": "bridge.tasks",
    "run_sync": "bridge.tasks",
    "stream": "bridge.tasks",
    "cancel_task": "bridge.gateway",
    # batch and streams
    "batch": "bridge.batch",
    "read_stream": "bridge.streams",
    "aread_stream": "bridge.streams",
    "stream_token": "bridge.stream_tokens",
}

__all__ = sorted([*_EXPORTS, "__version__", "api_key", "endpoint_url_base"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
