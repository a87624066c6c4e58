"""A streaming RunPod worker (generator handler).

Flags (read here, before ``runpod.serverless.start`` parses its own ``--rp_*`` flags):

- ``--aggregate``: start with ``return_aggregate_stream=True``, so ``/status`` and
  ``/runsync`` show the list of every yielded value; without it they show ``[]`` and only
  ``/stream`` carries the chunks.
- ``--async-gen``: use an async generator instead of a plain one.

The input: ``{"tokens": ["a", "b", ...]}`` yields each token as ``{"token": t, "i": n}``;
``"fail_at": n`` raises at token n; ``"error_at": n`` yields ``{"error": "..."}`` at token n.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import runpod


def _step(job_input: dict[str, Any], i: int, token: Any) -> dict[str, Any]:
    if job_input.get("fail_at") == i:
        raise RuntimeError(f"generator failed at token {i}")
    if job_input.get("error_at") == i:
        return {"error": f"generator error at token {i}"}
    return {"token": token, "i": i}


def handler(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    job_input = job["input"] or {}
    for i, token in enumerate(job_input.get("tokens", ["a", "b", "c"])):
        yield _step(job_input, i, token)


async def async_handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    job_input = job["input"] or {}
    for i, token in enumerate(job_input.get("tokens", ["a", "b", "c"])):
        await asyncio.sleep(0)
        yield _step(job_input, i, token)


if __name__ == "__main__":
    aggregate = "--aggregate" in sys.argv
    chosen = async_handler if "--async-gen" in sys.argv else handler
    sys.argv = [a for a in sys.argv if a not in ("--aggregate", "--async-gen")]
    runpod.serverless.start({"handler": chosen, "return_aggregate_stream": aggregate})
