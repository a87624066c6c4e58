"""An async RunPod worker: ``/cancel`` reaches it as ``asyncio.CancelledError``.

The input's ``op``:

- ``echo`` (default): returns ``{"echo": input, "pid": <pid>}``
- ``sleep``: ``await asyncio.sleep(seconds)``. When the platform stops the job (``/cancel``
  or ``executionTimeout``), the sleep raises ``CancelledError``; if ``marker`` is given the
  handler writes that file first, so a test can see the cancellation arrived, then re-raises
  as RunPod's docs require.
- ``raise``: raises ``RuntimeError(message)``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import runpod


async def handler(job: dict[str, Any]) -> Any:
    job_input = job["input"] or {}
    op = job_input.get("op", "echo")
    if op == "echo":
        return {"echo": job_input, "pid": os.getpid()}
    if op == "sleep":
        try:
            await asyncio.sleep(float(job_input.get("seconds", 1)))
        except asyncio.CancelledError:
            marker = job_input.get("marker")
            if marker:
                with open(marker, "w", encoding="utf-8") as fh:
                    fh.write(job["id"])
            raise
        return {"slept": job_input.get("seconds", 1)}
    if op == "raise":
        raise RuntimeError(job_input.get("message", "async handler exploded"))
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
