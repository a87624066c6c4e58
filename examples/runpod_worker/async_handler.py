"""An async RunPod worker: ``/cancel`` reaches it as ``asyncio.CancelledError``.

The input's ``op``:

- ``echo`` (default): returns ``{"echo": input, "pid": <pid>}``
- ``sleep``: ``await asyncio.sleep(seconds)``. When the platform stops the job (``/cancel``
  or ``executionTimeout``), the sleep raises ``CancelledError``; if ``marker`` is given the
  handler writes that file first, so a test can see the cancellation arrived, then re-raises
  as RunPod's docs require.
- ``raise``: raises ``RuntimeError(message)``.

``--concurrency N`` starts the worker with ``concurrency_modifier`` returning N: the SDK
then runs up to N jobs at once and asks for several at a time (job-take-batch).
"""

from __future__ import annotations

import asyncio
import os
import sys
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


def _concurrency() -> int:
    # Read (and removed) before runpod.serverless.start parses the command line.
    if "--concurrency" not in sys.argv:
        return 1
    at = sys.argv.index("--concurrency")
    value = int(sys.argv[at + 1])
    del sys.argv[at : at + 2]
    return value


if __name__ == "__main__":
    concurrency = _concurrency()
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: concurrency})
