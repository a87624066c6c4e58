"""Benchmark: bridge's endpoint client vs the official ``runpod`` SDK (1.12.0), side by side.

``.venv/bin/python -m bench.client [--quick] [--jobs N] [--seconds S] [--threads T]``

One local endpoint runs in a separate process (so the server does not share this
process's GIL) with enough workers for every job at once. Each of eight runs gets its own
endpoint id, so the endpoint's ``/_bridge/stats`` counters give requests per job per run:

- workloads: N zero-work jobs, and N jobs of S seconds (an async handler sleeping);
- clients: ``bridge.AsyncioEndpoint`` vs ``runpod.AsyncioEndpoint`` (all jobs submitted and
  awaited concurrently; the SDK's ``output()`` needs an explicit timeout), and
  ``bridge.Endpoint`` vs ``runpod.Endpoint`` through a thread pool of T threads (250), each
  thread submitting a job and waiting for it, then the next.

Completion-notice latency is the time from the handler returning (it returns
``time.monotonic()``, a system-wide clock on Linux) to the client handing the output to
the caller. Goals (issue 2): ours not slower, notices completion sooner, and at most a
third of the SDK's status requests per S-second job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATUS_ROUTES = ("status", "status-sync", "stream")
SDK_TIMEOUT = 600


async def handler(job: dict[str, Any]) -> Any:
    """The benchmark's job: sleep ``input.sleep`` seconds, return when it finished."""
    seconds = float(job["input"].get("sleep", 0))
    if seconds:
        await asyncio.sleep(seconds)
    return {"done": time.monotonic()}


def serve(endpoint_ids: list[str], workers: int) -> None:
    """Child process: serve ``handler`` under every id, print the base URL, run until killed.

    The site is bound here with a listen backlog of 4096 rather than aiohttp's 128: 2,000
    clients connecting at once overflow 128, and each dropped SYN costs its client a 1 s
    (then 3 s, 7 s) retransmit, which swamped every measurement."""
    from aiohttp import web

    from bridge.local.server import LocalServer

    async def main() -> None:
        server = LocalServer()
        for endpoint_id in endpoint_ids:
            server.add_endpoint(endpoint_id, handler, workers=workers)
        runner = web.AppRunner(server.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(server.base_url, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Run:
    workload: str
    client: str
    jobs: int
    wall: float = 0.0
    notices: list[float] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def per_job(self) -> float:
        return sum(self.requests.values()) / self.jobs

    @property
    def status_per_job(self) -> float:
        return sum(self.requests.get(r, 0) for r in STATUS_ROUTES) / self.jobs

    def notice(self, q: float) -> float:
        ordered = sorted(self.notices)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# -- the four clients ---------------------------------------------------------------------


async def ours_async(base_url: str, endpoint_id: str, n: int, seconds: float) -> list[float]:
    import bridge

    async with bridge.AsyncioEndpoint(endpoint_id, base_url=base_url, api_key="bench") as ep:

        async def one(i: int) -> float:
            job = await ep.run({"sleep": seconds, "i": i})
            out = await job.output()
            return time.monotonic() - out["done"]

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def sdk_async(base_url: str, endpoint_id: str, n: int, seconds: float) -> list[float]:
    import runpod
    from runpod.http_client import AsyncClientSession

    runpod.api_key, runpod.endpoint_url_base = "bench", base_url
    async with AsyncClientSession() as session:
        ep = runpod.AsyncioEndpoint(endpoint_id, session)

        async def one(i: int) -> float:
            job = await ep.run({"sleep": seconds, "i": i})
            out = await job.output(timeout=SDK_TIMEOUT)
            return time.monotonic() - out["done"]

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def _pooled(job: Callable[[int], Any], n: int, threads: int) -> list[float]:
    """Each pool thread submits a job and waits for it, then takes the next."""

    def notice(i: int) -> float:
        out = job(i)
        return time.monotonic() - out["done"]

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(notice, range(n)))


def ours_sync(base_url: str, endpoint_id: str, n: int, seconds: float, threads: int) -> list[float]:
    import bridge

    with bridge.Endpoint(endpoint_id, base_url=base_url, api_key="bench") as ep:
        return _pooled(lambda i: ep.run({"sleep": seconds, "i": i}).output(), n, threads)


def sdk_sync(base_url: str, endpoint_id: str, n: int, seconds: float, threads: int) -> list[float]:
    import runpod

    runpod.api_key, runpod.endpoint_url_base = "bench", base_url
    ep = runpod.Endpoint(endpoint_id)
    return _pooled(lambda i: ep.run({"input": {"sleep": seconds, "i": i}}).output(timeout=SDK_TIMEOUT), n, threads)


# -- driving --------------------------------------------------------------------------------


def _stats(base_url: str, endpoint_id: str) -> dict[str, int]:
    root = base_url.rsplit("/v2", 1)[0]
    with urllib.request.urlopen(f"{root}/_bridge/stats?endpoint={endpoint_id}", timeout=30) as resp:
        return dict(json.loads(resp.read()))


def measure(base_url: str, run: Run, endpoint_id: str, fn: Callable[[], list[float]]) -> Run:
    started = time.monotonic()
    run.notices = fn()
    run.wall = time.monotonic() - started
    run.requests = _stats(base_url, endpoint_id)
    print(f"  {run.workload:<10} {run.client:<16} {run.wall:7.2f} s", file=sys.stderr, flush=True)
    return run


def table(runs: list[Run]) -> str:
    head = (f"{'workload':<10} {'client':<16} {'wall s':>7} {'jobs/s':>8} {'req/job':>8} "
            f"{'status/job':>10} {'notice p50 ms':>13} {'p95 ms':>8}")
    lines = [head, "-" * len(head)]
    for r in runs:
        lines.append(
            f"{r.workload:<10} {r.client:<16} {r.wall:7.2f} {r.jobs / r.wall:8.1f} {r.per_job:8.2f} "
            f"{r.status_per_job:10.2f} {r.notice(0.5):13.1f} {r.notice(0.95):8.1f}"
        )
    lines += ["", "ratios (bridge vs runpod SDK, same workload and mode):",
              f"{'workload':<10} {'mode':<8} {'speed x':>8} {'status req ours/SDK':>20} {'notice p50 SDK/ours':>20}"]
    for i in range(0, len(runs), 2):
        ours, sdk = runs[i], runs[i + 1]
        mode = ours.client.split()[-1]
        lines.append(
            f"{ours.workload:<10} {mode:<8} {sdk.wall / ours.wall:8.2f} "
            f"{ours.status_per_job / max(sdk.status_per_job, 1e-9):20.2f} "
            f"{sdk.notice(0.5) / max(ours.notice(0.5), 1e-3):20.1f}"
        )
    return "\n".join(lines)


def _runner(base_url: str, endpoint_id: str, mode: str, who: str, n: int, seconds: float,
            threads: int) -> Callable[[], list[float]]:
    if mode == "asyncio":
        coro_fn = ours_async if who == "bridge" else sdk_async
        return lambda: asyncio.run(coro_fn(base_url, endpoint_id, n, seconds))
    sync_fn = ours_sync if who == "bridge" else sdk_sync
    return lambda: sync_fn(base_url, endpoint_id, n, seconds, threads)


def warm(base_url: str, endpoint_id: str, threads: int) -> None:
    for mode in ("asyncio", "sync"):
        for who in ("bridge", "runpod SDK"):
            _runner(base_url, endpoint_id, mode, who, 20, 0.0, threads)()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (100 jobs of 2 s)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per run (default 2000)")
    parser.add_argument("--seconds", type=float, default=None, help="length of the long jobs (default 5)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every pair this many times (alternating) and keep the median wall time")
    parser.add_argument("--threads", type=int, default=250, help="thread pool size for the sync clients")
    args = parser.parse_args()
    n = args.jobs or (100 if args.quick else 2000)
    seconds = args.seconds if args.seconds is not None else (2.0 if args.quick else 5.0)
    long_name = f"{seconds:g}s"

    plan: list[tuple[str, float, str, str]] = []
    for workload, length in (("zero-work", 0.0), (long_name, seconds)):
        for mode in ("asyncio", "sync"):
            for who in ("bridge", "runpod SDK"):
                plan.append((workload, length, mode, who))
    ids = [f"run{i}" for i in range(len(plan) * args.repeat)]
    # The SDK's requests pool holds 10 connections; with more threads urllib3 logs a
    # warning per discarded connection, which would bury the table.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

    import runpod  # noqa: F401  (imported before timing: it takes a second or two)

    server = subprocess.Popen(
        [sys.executable, "-c", f"from bench.client import serve; serve({[*ids, 'warmup']!r}, {n + 16})"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        if not base_url.startswith("http"):
            print("the local endpoint did not start", file=sys.stderr)
            return 1
        print(f"{n} jobs per run, long jobs {seconds:g} s, {args.threads} threads for sync clients; "
              f"endpoint {base_url} (separate process)", file=sys.stderr)
        # Warm both clients and the server up (imports, first connections) before timing.
        warm(base_url, "warmup", args.threads)
        fresh = iter(ids)
        runs = []
        for pair in range(0, len(plan), 2):
            tries: list[list[Run]] = [[], []]
            for _ in range(args.repeat):  # ours, SDK, ours, SDK, ...: load drifts hit both
                for side, (workload, length, mode, who) in enumerate(plan[pair:pair + 2]):
                    endpoint_id = next(fresh)
                    tries[side].append(measure(
                        base_url, Run(workload, f"{who} {mode}", n), endpoint_id,
                        _runner(base_url, endpoint_id, mode, who, n, length, args.threads)))
            runs += [sorted(t, key=lambda r: r.wall)[len(t) // 2] for t in tries]
    finally:
        server.terminate()
        server.wait(10)
    print()
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
