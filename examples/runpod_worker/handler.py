"""A plain (sync) RunPod worker, unchanged from what you would deploy on RunPod.

Run it under bridge's local endpoint::

    bridge serve --worker-command "python examples/runpod_worker/handler.py"

The input's ``op`` picks a behaviour so one worker file covers the cases the tests need:

- ``echo`` (default): returns ``{"echo": input, "pid": <worker pid>}``
- ``sleep``: sleeps ``seconds`` (a slow job to cancel, time out or kill mid-job)
- ``progress``: sends ``runpod.serverless.progress_update(job, value)``, then waits until the
  file ``release`` exists (at most ``seconds``), then returns ``{"done": true}``
- ``error``: returns ``{"error": message, "partial": 1}`` (the job ends FAILED)
- ``raise``: raises ``ValueError(message)`` (FAILED, with the SDK's JSON error text)
- ``refresh``: returns ``{"pid": <pid>, "refresh_worker": true}``: the worker process is
  recycled after the job, so the next job runs in a new process
- ``empty``: returns ``{}`` (COMPLETED with no output)
- ``big``: returns ``{"blob": "x" * size}`` (a large result)
"""

from __future__ import annotations

import os
import time
from typing import Any

import runpod


def handler(job: dict[str, Any]) -> Any:
    job_input = job["input"] or {}
    op = job_input.get("op", "echo")
    if op == "echo":
        return {"echo": job_input, "pid": os.getpid()}
    if op == "sleep":
        time.sleep(float(job_input.get("seconds", 1)))
        return {"slept": job_input.get("seconds", 1)}
    if op == "progress":
        runpod.serverless.progress_update(job, job_input.get("value", "50%"))
        deadline = time.monotonic() + float(job_input.get("seconds", 30))
        release = job_input.get("release")
        # Block until the test lets the job finish (or give up at the deadline).
        while release and not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"done": True}
    if op == "error":
        return {"error": job_input.get("message", "custom error"), "partial": 1}
    if op == "raise":
        raise ValueError(job_input.get("message", "handler exploded"))
    if op == "refresh":
        return {"pid": os.getpid(), "refresh_worker": True}
    if op == "empty":
        return {}
    if op == "big":
        return {"blob": "x" * int(job_input.get("size", 1024))}
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
