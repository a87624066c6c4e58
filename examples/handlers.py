"""Example handlers for the local endpoint (``bridge serve examples/handlers.py:NAME``).

They are ordinary RunPod handlers: each takes the job dict (``{"id", "input", ...}``) and
would run unchanged under ``runpod.serverless.start({"handler": ...})``, except that
``progress`` reports through ``bridge.local.progress_update`` (same call shape as
``runpod.serverless.progress_update``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from bridge.local import progress_update


def _input(job: dict[str, Any]) -> dict[str, Any]:
    value = job.get("input")
    return value if isinstance(value, dict) else {}


def echo(job: dict[str, Any]) -> Any:
    """Return the input unchanged."""
    return job["input"]


async def aecho(job: dict[str, Any]) -> Any:
    """Async echo: thousands of these run at once on one event loop."""
    return job["input"]


async def sleep(job: dict[str, Any]) -> dict[str, Any]:
    """Wait ``input.seconds`` (default 1) without holding a thread; cancellable."""
    seconds = float(_input(job).get("seconds", 1))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def sleep_sync(job: dict[str, Any]) -> dict[str, Any]:
    """Blocking sleep of ``input.seconds``: runs in the server's thread pool."""
    seconds = float(_input(job).get("seconds", 1))
    time.sleep(seconds)
    return {"slept": seconds}


def fail(job: dict[str, Any]) -> dict[str, Any]:
    """Fail the RunPod way: return ``{"error": message}`` (→ FAILED with that error)."""
    return {"error": str(_input(job).get("message", "failed on purpose"))}


def raises(job: dict[str, Any]) -> Any:
    """Raise an exception (→ FAILED with RunPod's JSON error string)."""
    raise ValueError(str(_input(job).get("message", "raised on purpose")))


def _tokens(job: dict[str, Any]) -> list[str]:
    data = _input(job)
    text = str(data.get("text", "the quick brown fox jumps over the lazy dog"))
    return text.split()[: int(data.get("limit", 1_000_000))]


def stream_tokens(job: dict[str, Any]) -> Iterator[str]:
    """Sync generator: yield the words of ``input.text``, ``input.delay`` seconds apart."""
    delay = float(_input(job).get("delay", 0))
    for token in _tokens(job):
        if delay:
            time.sleep(delay)
        yield token


async def astream_tokens(job: dict[str, Any]) -> AsyncIterator[str]:
    """Async generator twin of :func:`stream_tokens`."""
    delay = float(_input(job).get("delay", 0))
    for token in _tokens(job):
        if delay:
            await asyncio.sleep(delay)
        yield token


async def progress(job: dict[str, Any]) -> dict[str, Any]:
    """Report ``input.steps`` progress updates (``{"step": i, "of": n}``), then finish."""
    data = _input(job)
    steps = int(data.get("steps", 3))
    delay = float(data.get("delay", 0.1))
    for step in range(1, steps + 1):
        progress_update(job, {"step": step, "of": steps})
        await asyncio.sleep(delay)
    return {"steps": steps}


async def scripted(job: dict[str, Any]) -> Any:
    """One handler for many tests, driven by its input.

    ``{"sleep": s}`` waits first; then ``{"raise": msg}`` raises, ``{"error": msg}`` fails,
    ``{"output": value}`` returns ``value``; otherwise the input is echoed.
    """
    data = _input(job)
    if data.get("sleep"):
        await asyncio.sleep(float(data["sleep"]))
    if "raise" in data:
        raise RuntimeError(str(data["raise"]))
    if "error" in data:
        return {"error": str(data["error"])}
    if "output" in data:
        return data["output"]
    return job["input"]
