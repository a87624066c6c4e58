"""Benchmark: bridge's Celery gateway against plain Celery, side by side in one run.

``.venv/bin/python -m bench.celery [--quick] [--only a,b,c]``

Everything runs on this machine: one real ``redis-server`` (broker and backend), one local
endpoint in a separate process (``bridge serve``, async handlers, enough slots for every
job at once) and one Celery worker subprocess per row (``celery -A bench._celery_app
worker``, bridge.app's settings: threads pool, -c 10000 unless the row says otherwise).
Each row publishes its N tasks as a group from this process and waits for all results.

(a) in flight: N jobs of S s through ONE bridge worker process vs N no-op Celery tasks
    (goal: wall ≤ 1.3 × (no-op wall + S)), peak RSS of the worker (goal ≤ 1.5 GB), status
    requests per job.
(b) naive baseline: a task calling the runpod SDK's ``run_sync`` on prefork -c 2 and threads
    -c 200 vs bridge, for 200 jobs of 1 s.
(c) overhead: 5,000 zero-work jobs through ``bridge.run`` vs 5,000 no-op tasks (goal ≤ 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = str(ROOT / "examples" / "handlers.py")
BIN = Path(sys.executable).parent


@dataclass
class Row:
    name: str
    jobs: int
    wall: float
    rss_mb: float
    status_per_job: float | None = None
    requests_per_job: float | None = None


def _rss_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except OSError:
        return []


class Worker:
    """A worker subprocess; tracks the peak RSS of its process tree."""

    def __init__(self, env: dict[str, str], pool: str, concurrency: int, name: str) -> None:
        self.name = f"{name}-{os.getpid()}@bench"
        self.proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", "bench._celery_app", "worker", "-P", pool, "-c", str(concurrency),
             "-n", self.name, "-l", "WARNING", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(f"/tmp/bench-{name}.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        self.peak_kb = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            pids = [self.proc.pid, *_children(self.proc.pid)]
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p, "VmRSS:") for p in pids))

    def wait_ready(self, app: Any) -> None:
        deadline = time.monotonic() + 60
        while not app.control.ping([self.name], timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {self.name} did not start; see /tmp/bench-*.log")

    def stop(self) -> float:
        """Stop; the peak RSS in MB (the main process's high-water mark for one process)."""
        self._stop.set()
        self.peak_kb = max(self.peak_kb, _rss_kb(self.proc.pid, "VmHWM:"))
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return self.peak_kb / 1024


class Endpoint:
    """``bridge serve`` in its own process, serving the example handlers."""

    def __init__(self, port: int, workers: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}/v2"
        self.proc = subprocess.Popen(
            [str(BIN / "bridge"), "serve", f"{HANDLERS}:sleep", "-e", "sleep",
             "--endpoint", f"echo={HANDLERS}:aecho", "-p", str(port), "-w", str(workers)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open("/tmp/bench-endpoint.log", "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("the local endpoint did not start; see /tmp/bench-endpoint.log") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url.rsplit("/v2", 1)[0] + "/_bridge/stats", timeout=10) as r:
            return dict(json.loads(r.read()))

    def requests(self, endpoint_id: str) -> tuple[int, int]:
        """(status-like requests, all requests) the endpoint received so far."""
        counts = self.stats().get("requests", {}).get(endpoint_id, {})
        status = sum(v for k, v in counts.items() if k in ("status", "status-sync", "stream"))
        return int(status), int(sum(counts.values()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Bench:
    def __init__(self, redis_url: str, endpoint: Endpoint) -> None:
        self.redis_url = redis_url
        self.endpoint = endpoint
        self.env = {
            **os.environ, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
            "BRIDGE_REDIS_URL": redis_url, "RUNPOD_ENDPOINT_BASE_URL": endpoint.base_url,
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url)
        from bench._celery_app import app

        self.app = app

    def row(self, name: str, task: str, make_args: Any, jobs: int, pool: str = "threads",
            concurrency: int = 10000, endpoint_id: str | None = None, timeout: float = 900) -> Row:
        from celery import group

        worker = Worker(self.env, pool, concurrency, name.split()[0].replace("/", "-"))
        try:
            worker.wait_ready(self.app)
            before = self.endpoint.requests(endpoint_id) if endpoint_id else (0, 0)
            sigs = [self.app.signature(task, args=make_args(i)) for i in range(jobs)]
            started = time.perf_counter()
            results = group(sigs).apply_async()
            out = results.get(timeout=timeout, propagate=True)
            wall = time.perf_counter() - started
            assert len(out) == jobs
            per_job = all_per_job = None
            if endpoint_id:
                after = self.endpoint.requests(endpoint_id)
                per_job, all_per_job = (after[0] - before[0]) / jobs, (after[1] - before[1]) / jobs
            results.forget()
        finally:
            rss = worker.stop()
        row = Row(name, jobs, wall, rss, per_job, all_per_job)
        print(f"  {name:<44} {jobs:>6} jobs  {wall:8.1f} s  RSS {rss:7.0f} MB"
              + (f"  status/job {per_job:.2f}" if per_job is not None else ""), flush=True)
        return row


def _table(title: str, rows: list[Row], lines: list[str]) -> None:
    print(f"\n{title}")
    print(f"| {'run':<44} | {'jobs':>6} | {'wall s':>7} | {'peak RSS MB':>11} | {'status req/job':>14} "
          f"| {'all req/job':>11} |")
    print(f"|{'-' * 46}|{'-' * 8}|{'-' * 9}|{'-' * 13}|{'-' * 16}|{'-' * 13}|")
    for r in rows:
        per = f"{r.status_per_job:.2f}" if r.status_per_job is not None else "-"
        every = f"{r.requests_per_job:.2f}" if r.requests_per_job is not None else "-"
        print(f"| {r.name:<44} | {r.jobs:>6} | {r.wall:>7.1f} | {r.rss_mb:>11.0f} | {per:>14} | {every:>11} |")
    for line in lines:
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.celery", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every row")
    parser.add_argument("--only", default="a,b,c", help="which parts to run (a,b,c)")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    n_a, s_a = (500, 3.0) if args.quick else (10_000, 10.0)
    n_b, s_b = (20, 1.0) if args.quick else (200, 1.0)
    n_c = 500 if args.quick else 5_000

    from bridge.embedded_redis import EmbeddedRedis, free_port

    redis_server = EmbeddedRedis(require_real=True).start()
    endpoint = Endpoint(free_port(), workers=max(n_a, n_b, n_c) + 100)
    bench = Bench(redis_server.url, endpoint)
    print(f"bench.celery: redis-server {redis_server.url}, endpoint {endpoint.base_url}, "
          f"{os.cpu_count()} CPUs", flush=True)
    try:
        if "a" in parts:
            noop = bench.row("(a) no-op Celery tasks (threads -c 10000)", "bench.noop", lambda i: (i,), n_a)
            ours = bench.row(f"(a) bridge.run, {s_a:g} s jobs (1 worker process)", "bridge.run",
                             lambda i: ({"seconds": s_a, "i": i}, "sleep"), n_a, endpoint_id="sleep")
            goal = 1.3 * (noop.wall + s_a)
            _table("(a) in flight", [noop, ours], [
                f"wall {ours.wall:.1f} s vs goal 1.3 x ({noop.wall:.1f} + {s_a:g}) = {goal:.1f} s: "
                f"ratio {ours.wall / (noop.wall + s_a):.2f} -> {'MET' if ours.wall <= goal else 'MISSED'}",
                f"peak RSS {ours.rss_mb:.0f} MB vs goal 1536 MB -> {'MET' if ours.rss_mb <= 1536 else 'MISSED'}",
            ])
        if "b" in parts:
            job = {"seconds": s_b}
            rows = [
                bench.row("(b) naive SDK run_sync, prefork -c 2", "bench.naive", lambda i: ({**job, "i": i}, "sleep"),
                          n_b, pool="prefork", concurrency=2, endpoint_id="sleep"),
                bench.row("(b) naive SDK run_sync, threads -c 200", "bench.naive",
                          lambda i: ({**job, "i": i}, "sleep"), n_b, concurrency=200, endpoint_id="sleep"),
                bench.row("(b) bridge.run, threads", "bridge.run", lambda i: ({**job, "i": i}, "sleep"), n_b,
                          endpoint_id="sleep"),
            ]
            best = rows[2].wall
            _table("(b) naive baseline", rows, [
                f"bridge is {rows[0].wall / best:.1f}x faster than prefork -c 2 and "
                f"{rows[1].wall / best:.1f}x than threads -c 200",
            ])
        if "c" in parts:
            noop = bench.row("(c) no-op Celery tasks (threads -c 10000)", "bench.noop", lambda i: (i,), n_c)
            ours = bench.row("(c) bridge.run, zero-work jobs", "bridge.run", lambda i: ({"i": i}, "echo"), n_c,
                             endpoint_id="echo")
            ratio = ours.wall / noop.wall
            _table("(c) overhead", [noop, ours], [
                f"bridge.run / no-op = {ratio:.2f}x vs goal 1.5x -> {'MET' if ratio <= 1.5 else 'MISSED'}",
            ])
    finally:
        endpoint.stop()
        redis_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
