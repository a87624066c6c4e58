"""Benchmark: waiting for jobs on an endpoint without long polls (issue 10), bridge side by
side with the official runpod SDK's ``AsyncioEndpoint`` (a look at once, then one every
second, then one more fetch of the output), in one run, ratios printed.

``.venv/bin/python -m bench.waiting [--quick] [--only steady,spread,celery]``

Everything runs here, on 127.0.0.1: ``bridge serve --no-long-poll`` in its own process
(its handler, :func:`timed`, sleeps ``input.seconds`` and returns the wall time it ended),
the two clients in this process, and for the Celery part a real ``redis-server`` and a
``celery -A bridge.app worker`` subprocess (threads pool, bridge.app's settings).

- steady: 1,000 jobs of 5 s +- 10 % (uniform 4.5-5.5 s), 500 at a time.
- spread: 1,000 jobs uniform 0.5-30 s, 500 at a time.
  Each preceded by 20 jobs at once from the same distribution (bridge learns from those;
  the goals are "after the first 20"), reported apart. Same durations for both clients,
  each on its own endpoint id (so the endpoint's ``/_bridge/stats`` counts each side's
  requests apart). Per client: status requests per job (``status`` + ``status-sync``,
  from the endpoint), notice lateness p50/p90 (when ``output()`` returned minus when the
  handler ended), wall time.
- celery: ``bridge.run`` of 500 x 30 s and 2,000 x 10 s jobs through a fresh worker
  (cold: nothing learned yet), then the same again on the same worker (warm); status
  requests per job.

Goals (issue 10): steady, after the first 20: <= 2 status requests per job and lateness
p50 <= 250 ms; spread: no more requests and no later notice (p50, p90) than the SDK;
celery: <= 3 status requests per 30 s job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any


async def timed(job: dict[str, Any]) -> dict[str, Any]:
    """The endpoint's handler: sleep ``input.seconds``, return the wall time it ended."""
    await asyncio.sleep(float(job["input"]["seconds"]))
    return {"ended": time.time(), "i": job["input"].get("i")}


# -- the endpoint ---------------------------------------------------------------------------

WARMUP = 20  # jobs before the measured ones ("after the first 20")
ENDPOINTS = ("steady-bridge", "steady-sdk", "spread-bridge", "spread-sdk", "celery")


def start_endpoint(port: int, workers: int) -> Any:
    """``bridge serve --no-long-poll`` serving :func:`timed` under every id in ENDPOINTS."""
    from bench._procs import BIN, ROOT, Endpoint

    class NoLongPollEndpoint(Endpoint):
        def __init__(self) -> None:  # Endpoint's waiting and stats, another command line
            spec = f"{ROOT / 'bench' / 'waiting.py'}:timed"
            self.base_url = f"http://127.0.0.1:{port}/v2"
            extra = [a for ep in ENDPOINTS[1:] for a in ("--endpoint", f"{ep}={spec}")]
            self.proc = subprocess.Popen(
                [str(BIN / "bridge"), "serve", spec, "-e", ENDPOINTS[0], *extra, "-p", str(port),
                 "-w", str(workers), "--no-long-poll"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open("/tmp/bench-waiting-endpoint.log", "wb"),  # noqa: SIM115
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    self.stats()
                    return
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise SystemExit("the endpoint did not start; see /tmp/bench-waiting-endpoint.log") from None
                    time.sleep(0.1)

        def looks(self, endpoint_id: str) -> int:
            counts = self.stats().get("requests", {}).get(endpoint_id, {})
            return int(counts.get("status", 0) + counts.get("status-sync", 0))

    return NoLongPollEndpoint()


# -- the clients ----------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    wall: float = 0.0
    looks_per_job: float = 0.0
    lateness: list[float] = field(default_factory=list)  # seconds, per job
    submits: list[float] = field(default_factory=list)  # seconds /run took, per job
    failed: int = 0

    def late(self, q: float) -> float:
        return _quantile(self.lateness, q)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def run_side(name: str, durations: list[float], at_once: int, make_job: Any, endpoint: Any,
                   endpoint_id: str) -> Side:
    """Run every job ``at_once`` at a time with ``make_job(input) -> awaitable output``."""
    side = Side(name)
    gate = asyncio.Semaphore(at_once)
    before = endpoint.looks(endpoint_id)

    async def one(i: int, seconds: float) -> None:
        async with gate:
            try:
                output = await make_job({"seconds": seconds, "i": i}, side.submits)
                side.lateness.append(time.time() - float(output["ended"]))
            except Exception as exc:  # counted, and the first shown
                side.failed += 1
                if side.failed == 1:
                    print(f"  {name}: job {i} failed: {exc!r}", flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, s) for i, s in enumerate(durations)))
    side.wall = time.perf_counter() - started
    side.looks_per_job = (endpoint.looks(endpoint_id) - before) / len(durations)
    return side


async def bridge_side(phases: list[tuple[list[float], int]], endpoint: Any, endpoint_id: str) -> list[Side]:
    """bridge's AsyncioEndpoint, one session (and one learned profile) for every phase."""
    import bridge

    async with bridge.AsyncioEndpoint(endpoint_id, api_key="bench", base_url=endpoint.base_url) as ep:
        async def job(inp: dict[str, Any], submits: list[float]) -> Any:
            sent = time.perf_counter()
            handle = await ep.run(inp)
            submits.append(time.perf_counter() - sent)
            return await handle.output(timeout=600)

        return [await run_side("bridge", durations, at_once, job, endpoint, endpoint_id)
                for durations, at_once in phases]


async def sdk_side(phases: list[tuple[list[float], int]], endpoint: Any, endpoint_id: str) -> list[Side]:
    import aiohttp
    import runpod

    runpod.endpoint_url_base = endpoint.base_url  # read when an endpoint is made
    connector = aiohttp.TCPConnector(limit=0)  # the SDK's own session has no limit either
    async with aiohttp.ClientSession(connector=connector) as session:
        ep = runpod.AsyncioEndpoint(endpoint_id, session, api_key="bench")

        async def job(inp: dict[str, Any], submits: list[float]) -> Any:
            sent = time.perf_counter()
            handle = await ep.run(inp)
            submits.append(time.perf_counter() - sent)
            return await handle.output(timeout=600)

        return [await run_side("SDK", durations, at_once, job, endpoint, endpoint_id)
                for durations, at_once in phases]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def compare(title: str, make: Any, n: int, at_once: int, endpoint: Any, prefix: str) -> list[str]:
    """The first 20 jobs (all at once) teach bridge the endpoint; then ``n`` more, ``at_once``
    at a time. Both clients run the same durations; figures for both phases."""
    warmup, main = [make() for _ in range(WARMUP)], [make() for _ in range(n)]
    print(f"\n{title}: {WARMUP} jobs at once, then {n} jobs, {at_once} at a time", flush=True)
    phases = [(warmup, WARMUP), (main, at_once)]
    ours = asyncio.run(bridge_side(phases, endpoint, f"{prefix}-bridge"))
    theirs = asyncio.run(sdk_side(phases, endpoint, f"{prefix}-sdk"))
    lines = [f"{title}"]
    for label, a, b in ((f"first {WARMUP} jobs, at once (bridge has learned nothing yet)", ours[0], theirs[0]),
                        (f"then {n} jobs, {at_once} at a time", ours[1], theirs[1])):
        lines.append(f"  {label}:")
        for side in (a, b):
            lines.append(f"    {side.name:<7} status requests/job {side.looks_per_job:6.2f}   lateness p50 "
                         f"{side.late(0.5) * 1000:6.0f} ms  p90 {side.late(0.9) * 1000:6.0f} ms   wall {side.wall:6.1f} s"
                         f"   /run p50 {_quantile(side.submits, 0.5) * 1000:4.0f} ms"
                         + (f"  FAILED {side.failed}" if side.failed else ""))
        lines.append(f"    ratio bridge/SDK: requests/job {_ratio(a.looks_per_job, b.looks_per_job)}, lateness p50 "
                     f"{_ratio(a.late(0.5), b.late(0.5))}, p90 {_ratio(a.late(0.9), b.late(0.9))}, "
                     f"wall {_ratio(a.wall, b.wall)}")
    for line in lines[1:]:
        print(line, flush=True)
    return lines


# -- the Celery path ------------------------------------------------------------------------


def celery_part(endpoint: Any, quick: bool) -> list[str]:
    from bench._procs import ROOT, Worker
    from bridge.embedded_redis import EmbeddedRedis

    redis_server = EmbeddedRedis(require_real=True).start()
    env = {**os.environ, "CELERY_BROKER_URL": redis_server.url, "CELERY_RESULT_BACKEND": redis_server.url,
           "BRIDGE_REDIS_URL": redis_server.url, "RUNPOD_ENDPOINT_BASE_URL": endpoint.base_url,
           "RUNPOD_API_KEY": "bench", "PYTHONPATH": str(ROOT)}
    os.environ.update(CELERY_BROKER_URL=redis_server.url, CELERY_RESULT_BACKEND=redis_server.url)
    from celery import group

    from bench._celery_app import app

    sizes = [(100, 30.0), (300, 10.0)] if quick else [(500, 30.0), (2000, 10.0)]
    lines = ["celery: bridge.run through a bridge.app worker (threads -c 8), status requests per job"]
    worker = Worker(env, "threads", 8, "waiting", app="bridge.app")
    try:
        worker.wait_ready(app)
        for state in ("cold", "warm"):
            for n, seconds in sizes:
                before = endpoint.looks("celery")
                started = time.perf_counter()
                results = group(app.signature("bridge.run", args=({"seconds": seconds, "i": i}, "celery"))
                                for i in range(n)).apply_async()
                results.get(timeout=seconds * 4 + 600)
                wall = time.perf_counter() - started
                per_job = (endpoint.looks("celery") - before) / n
                results.forget()
                goal = "" if seconds != 30.0 else f"  (goal <= 3: {'MET' if per_job <= 3 else 'MISSED'})"
                line = f"  {state}: {n:>5} x {seconds:g} s jobs  status requests/job {per_job:6.2f}  wall {wall:6.1f} s{goal}"
                print(line, flush=True)
                lines.append(line)
    finally:
        worker.stop()
        redis_server.stop()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.waiting", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--only", default="steady,spread,celery", help="which parts (steady,spread,celery)")
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()
    parts = args.only.split(",")
    from bridge.embedded_redis import free_port

    rng = random.Random(args.seed)
    n, at_once = (200, 100) if args.quick else (1000, 500)
    endpoint = start_endpoint(free_port(), workers=2 * at_once + (2100 if "celery" in parts else 0))
    print(f"bench.waiting: endpoint {endpoint.base_url} without long polls, {os.cpu_count()} CPUs", flush=True)
    summary: list[str] = []
    try:
        if "steady" in parts:
            summary += compare("steady 5 s +- 10 % (uniform 4.5-5.5 s)", lambda: rng.uniform(4.5, 5.5), n,
                               at_once, endpoint, "steady")
        if "spread" in parts:
            summary += compare("spread (uniform 0.5-30 s)", lambda: rng.uniform(0.5, 30.0), n, at_once,
                               endpoint, "spread")
        if "celery" in parts:
            summary += celery_part(endpoint, args.quick)
    finally:
        endpoint.stop()
    print("\nsummary")
    for line in summary:
        print(line)
    print("goals (issue 10): steady after 20 ends: <= 2 requests/job, lateness p50 <= 250 ms; spread: "
          "requests and lateness p50/p90 <= the SDK's; celery: <= 3 requests per 30 s job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
