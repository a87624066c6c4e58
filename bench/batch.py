"""Benchmark: batches, streams and webhooks, side by side with their baselines in one run.

``.venv/bin/python -m bench.batch [--quick]``

The local endpoints run in child processes (``--serve``), so the server does not share the
GIL with the code measured; stats come from their ``/_bridge/stats`` routes.

(a) N zero-work jobs (10,000; quick 2,000) through ``bridge.batch`` against an endpoint in the
    ``runpod`` profile (token buckets: /run 1,000 per 10 s, status 2,000 per 10 s). Baseline:
    the rate bound, (N - 1,000 burst) / 100 per s. Goal: wall <= 1.1x the bound, 0 failed.
(b) Chunk latency from the handler's yield (it yields ``time.time()``) to the consumer, 50
    concurrent streams: ``bridge.stream`` Celery tasks (embedded threads worker) read with
    ``bridge.aread_stream``, vs the official SDK's ``Job.stream()``. Goal: p50 <= 250 ms.
(c) Status requests per 30 s job (quick: 6 s jobs): ``bridge.batch`` with webhooks
    (goal 0), without (long polls, goal <= 3), and the SDK's ``Job.output()`` (1 s polls).
(d) Peak RSS of the batching process for zero-work batches of 10,000 and 100,000 inputs
    (quick 2,000 / 20,000), each in a fresh child process: flat means the 10x batch costs
    about the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATUS_ROUTES = ("status", "status-sync")


# -- handlers served by the child endpoint ---------------------------------------------------


async def zero(job: dict[str, Any]) -> Any:
    return {"i": job["input"].get("i")}


async def sleeper(job: dict[str, Any]) -> Any:
    await asyncio.sleep(float(job["input"]["seconds"]))
    return {"slept": job["input"]["seconds"]}


async def stamps(job: dict[str, Any]) -> Any:
    """Yield ``n`` chunks ``interval`` s apart, each stamped with the wall clock at its yield."""
    for k in range(int(job["input"].get("n", 20))):
        await asyncio.sleep(float(job["input"].get("interval", 0.1)))
        yield {"k": k, "t": time.time()}


def serve(profile: str) -> None:
    from bridge.local.server import LocalServer

    async def main() -> None:
        server = LocalServer(profile=profile if profile != "local" else None, webhook_retry_delay=1.0)
        server.add_endpoint("zero", zero, workers=1000)
        server.add_endpoint("sleep-hooks", sleeper, workers=200)
        server.add_endpoint("sleep-poll", sleeper, workers=200)
        server.add_endpoint("sleep-sdk", sleeper, workers=200)
        server.add_endpoint("stream-bridge", stamps, workers=100)
        server.add_endpoint("stream-sdk", stamps, workers=100)
        print(await server.start(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Child:
    """A child process serving the endpoints; ``base_url`` once it listens."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.batch", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()

    def stats(self, endpoint_id: str) -> dict[str, int]:
        root = self.base_url.rsplit("/v2", 1)[0]
        with urllib.request.urlopen(f"{root}/_bridge/stats?endpoint={endpoint_id}") as resp:
            return dict(json.loads(resp.read()))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- (a) rate-bound batch -----------------------------------------------------------------------


def bench_rate(n: int) -> list[tuple[str, str, str, str, str]]:
    import bridge

    child = Child("--serve", "runpod")
    try:
        started = time.monotonic()
        handle = bridge.batch(({"i": i} for i in range(n)), "zero", base_url=child.base_url, rate="1000/10",
                              api_key="bench")
        handle.wait()
        wall = time.monotonic() - started
        p = handle.progress()
        stats = child.stats("zero")
        handle.close()
    finally:
        child.close()
    bound = max(n - 1000, 0) / 100.0
    return [
        (f"(a) {n:,} jobs, runpod limits: wall s", f"{wall:.1f}", f"{bound:.1f} (rate bound)",
         f"{wall / bound:.3f}x" if bound else "-", "<= 1.1x"),
        ("(a) failed jobs / 429s absorbed", f"{p.failed} / {stats.get('run', 0) - n}", "0", "", "0 failed"),
    ]


# -- (b) chunk latency --------------------------------------------------------------------------


async def _consume(task_ids: list[str], redis_url: str) -> list[float]:
    import bridge

    lat: list[float] = []

    async def one(task_id: str) -> None:
        async for event in bridge.aread_stream(task_id, redis_url=redis_url, timeout=120):
            if not event.eof:
                lat.append(time.time() - event.chunk["t"])

    await asyncio.gather(*(one(t) for t in task_ids))
    return lat


def bench_stream(streams: int, chunks: int, poll_interval: str) -> list[tuple[str, str, str, str, str]]:
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    import bridge
    from bridge.embedded_redis import EmbeddedRedis
    from bridge.gateway.core import reset_gateway

    child = Child("--serve", "local")
    server = EmbeddedRedis().start()
    try:
        # The gateway polls /stream (RunPod offers no push) every BRIDGE_POLL_INTERVAL s while
        # no chunk comes: that interval sets the latency floor.
        os.environ.update(BRIDGE_REDIS_URL=server.url, RUNPOD_ENDPOINT_BASE_URL=child.base_url,
                          RUNPOD_API_KEY="bench", BRIDGE_POLL_INTERVAL=poll_interval)
        reset_gateway()
        app = Celery("bench-stream", broker=server.url, backend=server.url)
        app.conf.update(task_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1,
                        broker_connection_retry_on_startup=True)
        bridge.install(app)
        job = {"n": chunks, "interval": 0.1}
        with start_worker(app, pool="threads", concurrency=streams + 10, perform_ping_check=False,
                          loglevel="ERROR"):
            ids = [app.send_task("bridge.stream", args=[job, "stream-bridge"]).id for _ in range(streams)]
            ours = asyncio.run(_consume(ids, server.url))
        reset_gateway()
        os.environ.pop("BRIDGE_POLL_INTERVAL")
        sdk = sdk_stream(child.base_url, streams, job)
        ours_stats, sdk_stats = child.stats("stream-bridge"), child.stats("stream-sdk")
    finally:
        child.close()
        server.stop()
    ours_ms = [x * 1000 for x in ours]
    sdk_ms = [x * 1000 for x in sdk]
    return [
        (f"(b) chunk latency p50, {streams} streams, poll {poll_interval} s, ms", f"{statistics.median(ours_ms):.0f}",
         f"{statistics.median(sdk_ms):.0f} (SDK stream())",
         f"{statistics.median(ours_ms) / statistics.median(sdk_ms):.2f}x", "<= 250 ms"),
        ("(b) chunk latency p99, ms", f"{pct(ours_ms, 0.99):.0f}", f"{pct(sdk_ms, 0.99):.0f}",
         f"{pct(ours_ms, 0.99) / pct(sdk_ms, 0.99):.2f}x", ""),
        ("(b) chunks received", f"{len(ours)}/{streams * chunks}", f"{len(sdk)}/{streams * chunks}", "", "all"),
        ("(b) /stream requests", str(ours_stats.get("stream", 0)), str(sdk_stats.get("stream", 0)), "", ""),
    ]


def sdk_stream(base_url: str, streams: int, job: dict[str, Any]) -> list[float]:
    import runpod

    runpod.api_key, runpod.endpoint_url_base = "bench", base_url
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # the SDK's pool of 10 warns at 50 threads
    endpoint = runpod.Endpoint("stream-sdk")
    lat: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        for chunk in endpoint.run(job).stream():
            with lock:
                lat.append(time.time() - chunk["t"])

    threads = [threading.Thread(target=one) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


# -- (c) status requests per job ----------------------------------------------------------------


def bench_status(jobs: int, seconds: float) -> list[tuple[str, str, str, str, str]]:
    from aiohttp import web

    import bridge
    from bridge.embedded_redis import EmbeddedRedis
    from bridge.webhooks import WebhookReceiver
    from bridge.webhooks.receiver import make_app

    child = Child("--serve", "local")
    server = EmbeddedRedis().start()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    runner = web.AppRunner(make_app(server.url))

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        inputs = [{"seconds": seconds, "i": i} for i in range(jobs)]
        hooks = WebhookReceiver(f"http://127.0.0.1:{port}", server.url, fallback_after=max(60.0, 4 * seconds))
        with_hooks = bridge.batch(inputs, "sleep-hooks", base_url=child.base_url, webhooks=hooks, api_key="bench")
        without = bridge.batch(inputs, "sleep-poll", base_url=child.base_url, api_key="bench")
        sdk = threading.Thread(target=sdk_output, args=(child.base_url, inputs))
        sdk.start()
        with_hooks.wait()
        without.wait()
        sdk.join()
        per_job = {
            ep: sum(child.stats(ep).get(r, 0) for r in STATUS_ROUTES) / jobs
            for ep in ("sleep-hooks", "sleep-poll", "sleep-sdk")
        }
        failed = with_hooks.progress().failed + without.progress().failed
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        child.close()
        server.stop()
    sdk_n = per_job["sleep-sdk"]
    return [
        (f"(c) status requests per {seconds:g} s job, webhooks on", f"{per_job['sleep-hooks']:.2f}",
         f"{sdk_n:.1f} (SDK output())", f"{per_job['sleep-hooks'] / sdk_n:.3f}x", "0"),
        (f"(c) status requests per {seconds:g} s job, webhooks off", f"{per_job['sleep-poll']:.2f}",
         f"{sdk_n:.1f}", f"{per_job['sleep-poll'] / sdk_n:.3f}x", "<= 3"),
        ("(c) failed jobs", str(failed), "", "", "0"),
    ]


def sdk_output(base_url: str, inputs: list[dict[str, Any]]) -> None:
    import runpod

    runpod.api_key, runpod.endpoint_url_base = "bench", base_url
    endpoint = runpod.Endpoint("sleep-sdk")
    jobs = [endpoint.run(i) for i in inputs]
    threads = [threading.Thread(target=j.output, kwargs={"timeout": 600}) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- (d) memory ---------------------------------------------------------------------------------


def memory_child(n: int, base_url: str) -> None:
    """Child: run an n-input zero-work batch and print the RSS before and at peak (MB)."""
    import bridge
    import bridge.client.aio  # noqa: F401  (imports counted in the baseline)

    with open("/proc/self/statm") as fh:
        before = int(fh.read().split()[1]) * resource.getpagesize() / 2**20  # resident now
    started = time.monotonic()
    handle = bridge.batch(({"i": i} for i in range(n)), "zero", base_url=base_url, api_key="bench",
                          concurrency=500)
    handle.wait()
    wall = time.monotonic() - started
    p = handle.progress()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before": before, "peak": peak, "failed": p.failed, "done": p.done, "wall": wall}))


def bench_memory(sizes: list[int]) -> list[tuple[str, str, str, str, str]]:
    child = Child("--serve", "local")
    out: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            proc = subprocess.run([sys.executable, "-m", "bench.batch", "--memory-child", str(n), child.base_url],
                                  cwd=ROOT, capture_output=True, text=True, check=True)
            out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        child.close()
    small, big = sizes
    rows = []
    for n in sizes:
        m = out[n]
        rows.append((f"(d) peak RSS, {n:,}-input batch, MB", f"{m['peak']:.0f}",
                     f"{out[small]['peak']:.0f} ({small:,} inputs)" if n == big else f"{m['before']:.0f} (after imports)",
                     f"{m['peak'] / out[small]['peak']:.2f}x" if n == big else "",
                     "flat" if n == big else ""))
    rows.append((f"(d) {big:,} jobs: wall s / failed", f"{out[big]['wall']:.1f} / {out[big]['failed']}", "", "", ""))
    return rows


# -- main ---------------------------------------------------------------------------------------


def print_table(rows: list[tuple[str, str, str, str, str]]) -> None:
    head = ("measure", "bridge", "baseline", "ratio", "goal")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.batch", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 6 s jobs")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--only", default="abcd", help="parts to run, e.g. 'ac'")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if args.memory_child:
        memory_child(int(args.memory_child[0]), args.memory_child[1])
        return 0
    logging.basicConfig(level=logging.WARNING)
    rows: list[tuple[str, str, str, str, str]] = []
    quick = args.quick
    parts = {
        "a": lambda: bench_rate(2000 if quick else 10_000),
        "b": lambda: bench_stream(50, 10 if quick else 20, "0.5") + bench_stream(50, 10 if quick else 20, "0.2"),
        "c": lambda: bench_status(10 if quick else 20, 6.0 if quick else 30.0),
        "d": lambda: bench_memory([2000, 20_000] if quick else [10_000, 100_000]),
    }
    for key in args.only:
        t0 = time.monotonic()
        rows.extend(parts[key]())
        print(f"part ({key}) took {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
