"""Handlers the client tests serve from the local endpoint. Gates are threading.Events so a
test decides when a job may finish instead of sleeping."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

# Jobs wait on these until the test sets them (or their own deadline passes).
GATES: dict[str, threading.Event] = {}
_ATTEMPTS: dict[str, int] = {}


def gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


def echo(job: dict[str, Any]) -> Any:
    return job["input"]


def wrap(job: dict[str, Any]) -> Any:
    """The input inside a dict, so an empty input is still a visible output."""
    return {"got": job["input"]}


def size(job: dict[str, Any]) -> Any:
    """Returns the size of the input's ``blob`` rather than echoing megabytes back."""
    return {"len": len(job["input"].get("blob", ""))}


async def work(job: dict[str, Any]) -> Any:
    """``{"sleep": s}`` sleeps; ``{"gate": name}`` waits for the test; ``{"fail": msg}``
    raises; ``{"error": msg}`` returns RunPod's error form; else returns the input."""
    data = job["input"] if isinstance(job["input"], dict) else {}
    if "sleep" in data:
        await asyncio.sleep(float(data["sleep"]))
    if "gate" in data:
        event = gate(data["gate"])
        deadline = time.monotonic() + 30
        while not event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    if "fail" in data:
        raise ValueError(data["fail"])
    if "error" in data:
        return {"error": data["error"]}
    return {"echo": data}


async def flaky(job: dict[str, Any]) -> Any:
    """Fails on the first attempt of each job id, succeeds on the next (for /retry)."""
    _ATTEMPTS[job["id"]] = _ATTEMPTS.get(job["id"], 0) + 1
    if _ATTEMPTS[job["id"]] == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": _ATTEMPTS[job["id"]]}


def sync_gen(job: dict[str, Any]) -> Any:
    for i in range(int(job["input"].get("n", 3))):
        yield {"i": i}
    if job["input"].get("fail"):
        raise ValueError("generator broke")


async def async_gen(job: dict[str, Any]) -> Any:
    data = job["input"]
    for i in range(int(data.get("n", 3))):
        if "gate" in data and i == int(data.get("gate_at", 1)):
            event = gate(data["gate"])
            deadline = time.monotonic() + 30
            while not event.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        yield f"tok{i}"
    if data.get("fail"):
        raise ValueError("generator broke")
    if "sleep_after" in data:
        await asyncio.sleep(float(data["sleep_after"]))


async def progress(job: dict[str, Any]) -> Any:
    """Reports progress, then waits at its gate before returning the final output."""
    from bridge.local import progress_update

    progress_update(job, {"step": 1})
    event = gate(job["input"]["gate"])
    deadline = time.monotonic() + 30
    while not event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return {"final": True}
