"""RunPod's documented per-endpoint rate limits (reference §6), defined once: the gateway's
shared budgets, the batch pacer and the local endpoint's ``runpod`` profile all derive
theirs from this table."""

from __future__ import annotations

#: The window RunPod counts requests in, seconds.
WINDOW_SECONDS = 10.0

#: route -> (requests per window, requests at once).
RUNPOD_LIMITS: dict[str, tuple[int, int]] = {
    "run": (1000, 200),
    "runsync": (2000, 400),
    "status": (2000, 400),
    "stream": (2000, 400),
    "cancel": (100, 20),
    "purge-queue": (2, 1),
}
