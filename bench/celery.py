"""Benchmark: bridge's job tasks (held in the worker's main process, no pool slot) against
plain Celery tasks on the same worker, side by side in one run, ratios printed.

``.venv/bin/python -m bench.celery [--quick] [--only a,b,c,d]``

Everything runs here: one real ``redis-server`` (broker and backend), one local endpoint in
its own process (``bridge serve``, async handlers, a slot for every job) and Celery worker
subprocesses. RSS and CPU are summed over each worker's whole process tree.

(a) an existing app on Celery's default pool (``bench._existing_app``: prefork -c 2,
    Celery's defaults, ``bridge.install``): 200 no-op tasks, then 200 x 2 s ``bridge.run``
    jobs with 10 of the app's own tasks sent 0.5 s into the fan-out. Goals: jobs' wall
    <= 1.5 x (2 s + no-op wall); the app's 10 tasks all done before the first job.
(b) 10,000 x 10 s jobs through one worker, on prefork -c 2 and on threads (bridge.app's
    settings) vs 10,000 no-op tasks on the same settings. Goals: wall <= 1.3 x (no-op wall
    + 10 s); peak RSS <= 500 MB.
(c) 5,000 zero-work jobs vs 5,000 no-op tasks on the same worker, interleaved 3 times,
    medians; goal <= 1.5 x; CPU per job of each process (the endpoint shares the 2 cores).
(d) the naive baseline (the runpod SDK's ``run_sync`` inside a task) on prefork -c 2 vs
    bridge, 200 x 1 s jobs (slow: not in the default run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench._procs import ROOT, Endpoint, Worker, cpu_seconds


@dataclass
class Run:
    name: str
    jobs: int
    wall: float
    rss_mb: float = 0.0
    status_per_job: float | None = None
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per job, by process


class Bench:
    def __init__(self, redis_url: str, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.redis_pid = 0
        self.env = {
            **os.environ, "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
            "BRIDGE_REDIS_URL": redis_url, "RUNPOD_ENDPOINT_BASE_URL": endpoint.base_url,
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url)
        from bench._celery_app import app

        self.app = app

    def worker(self, pool: str, concurrency: int, name: str, app: str = "bench._celery_app") -> Worker:
        w = Worker(self.env, pool, concurrency, name, app)
        w.wait_ready(self.app)
        return w

    def run(self, worker: Worker, name: str, task: str, make_args: Any, jobs: int,
            endpoint_id: str | None = None, timeout: float = 1200) -> Run:
        """Publish ``jobs`` tasks as a group, wait for every result; CPU per job by process."""
        from celery import group

        sigs = [self.app.signature(task, args=make_args(i)) for i in range(jobs)]
        procs = {"worker": worker.cpu, "endpoint": lambda: cpu_seconds(self.endpoint.proc.pid),
                 "redis": lambda: cpu_seconds(self.redis_pid), "producer": lambda: cpu_seconds(os.getpid())}
        before_cpu = {k: f() for k, f in procs.items()}
        before = self.endpoint.requests(endpoint_id) if endpoint_id else (0, 0)
        started = time.perf_counter()
        results = group(sigs).apply_async()
        out = results.get(timeout=timeout, propagate=True)
        wall = time.perf_counter() - started
        assert len(out) == jobs
        cpu = {k: 1000 * (f() - before_cpu[k]) / jobs for k, f in procs.items()}
        per_job = None
        if endpoint_id:
            per_job = (self.endpoint.requests(endpoint_id)[0] - before[0]) / jobs
        results.forget()
        run = Run(name, jobs, wall, status_per_job=per_job, cpu_ms=cpu)
        print(f"  {name:<52} {jobs:>6} jobs {wall:8.2f} s  CPU ms/job "
              + " ".join(f"{k} {v:.2f}" for k, v in cpu.items()), flush=True)
        return run


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def part_a(bench: Bench, quick: bool) -> list[str]:
    """An existing app on prefork -c 2: the fan-out and the app's own tasks."""
    from celery import group

    n, seconds = (50, 2.0) if quick else (200, 2.0)
    w = bench.worker("prefork", 2, "a-existing", app="bench._existing_app")
    try:
        noop = bench.run(w, "(a) no-op tasks, existing app, prefork -c 2", "bench.noop", lambda i: (i,), n)
        sigs = [bench.app.signature("bridge.run", args=({"seconds": seconds, "i": i}, "sleep")) for i in range(n)]
        started = time.perf_counter()
        jobs = group(sigs).apply_async()
        while time.perf_counter() - started < 0.5:
            time.sleep(0.01)  # the scenario: the app's tasks come 0.5 s into the fan-out
        adds = [bench.app.send_task("existing.add", args=(i, i)) for i in range(10)]
        assert [a.get(timeout=600) for a in adds] == [2 * i for i in range(10)]
        adds_done = time.perf_counter() - started
        jobs.get(timeout=600)
        wall = time.perf_counter() - started
        first_job = min(r.date_done for r in jobs.results)
        last_add = max(a.date_done for a in adds)
    finally:
        rss = w.stop()
    goal = 1.5 * (seconds + noop.wall)
    print(f"  {'(a) bridge.run 2 s jobs, same worker':<52} {n:>6} jobs {wall:8.2f} s")
    return [
        f"(a) existing app, prefork -c 2: {n} x {seconds:g} s jobs {wall:.2f} s vs goal 1.5 x ({seconds:g} + "
        f"{noop.wall:.2f}) = {goal:.2f} s: ratio {wall / (seconds + noop.wall):.2f} of (2 s + no-op) -> "
        f"{_verdict(wall <= goal)} (before: 241 s)",
        f"    the app's 10 tasks sent at 0.5 s: all done {adds_done:.2f} s into the fan-out; last one "
        f"{(first_job - last_add).total_seconds():+.2f} s before the first job finished -> "
        f"{_verdict(last_add < first_job)} (before: they waited 237 s); peak RSS {rss:.0f} MB",
    ]


def part_b(bench: Bench, quick: bool) -> list[str]:
    """Many long jobs through one worker, prefork -c 2 and threads."""
    n, seconds = (1000, 3.0) if quick else (10_000, 10.0)
    lines = []
    for pool, conc in (("prefork", 2), ("threads", 8)):
        w = bench.worker(pool, conc, f"b-{pool}")
        try:
            noop = bench.run(w, f"(b) no-op tasks, {pool} -c {conc}", "bench.noop", lambda i: (i,), n)
            ours = bench.run(w, f"(b) bridge.run {seconds:g} s jobs, {pool} -c {conc}", "bridge.run",
                             lambda i: ({"seconds": seconds, "i": i}, "sleep"), n, endpoint_id="sleep")
        finally:
            rss = w.stop()
        goal = 1.3 * (noop.wall + seconds)
        lines.append(
            f"(b) {pool} -c {conc}: {n} x {seconds:g} s jobs {ours.wall:.1f} s vs goal 1.3 x ({noop.wall:.1f} + "
            f"{seconds:g}) = {goal:.1f} s: ratio {ours.wall / (noop.wall + seconds):.2f} -> "
            f"{_verdict(ours.wall <= goal)}; peak RSS {rss:.0f} MB vs 500 MB -> {_verdict(rss <= 500)}; "
            f"status requests/job {ours.status_per_job:.2f}")
    return lines


def part_c(bench: Bench, quick: bool) -> list[str]:
    """Zero-work jobs vs no-op tasks on the same worker, interleaved, medians of 3."""
    n = 500 if quick else 5_000
    lines = []
    for pool, conc in (("threads", 8), ("prefork", 2)):
        w = bench.worker(pool, conc, f"c-{pool}")
        noops: list[Run] = []
        ours: list[Run] = []
        try:
            for rep in range(3):
                noops.append(bench.run(w, f"(c) no-op tasks, {pool} -c {conc} #{rep + 1}", "bench.noop",
                                       lambda i: (i,), n))
                ours.append(bench.run(w, f"(c) bridge.run zero-work, {pool} -c {conc} #{rep + 1}", "bridge.run",
                                      lambda i: ({"i": i}, "echo"), n, endpoint_id="echo"))
        finally:
            w.stop()
        noop_wall = statistics.median(r.wall for r in noops)
        our_wall = statistics.median(r.wall for r in ours)
        ratio = our_wall / noop_wall
        cpu_noop = {k: statistics.median(r.cpu_ms[k] for r in noops) for k in noops[0].cpu_ms}
        cpu_ours = {k: statistics.median(r.cpu_ms[k] for r in ours) for k in ours[0].cpu_ms}
        lines.append(f"(c) {pool} -c {conc}: {n} zero-work jobs {our_wall:.2f} s vs {n} no-op {noop_wall:.2f} s "
                     f"(medians of 3): {ratio:.2f} x vs goal 1.5 x -> {_verdict(ratio <= 1.5)}")
        lines.append("    CPU ms per job (no-op -> bridge.run): " + ", ".join(
            f"{k} {cpu_noop[k]:.2f} -> {cpu_ours[k]:.2f}" for k in cpu_ours))
    return lines


def part_d(bench: Bench, quick: bool) -> list[str]:
    """The naive SDK task on prefork -c 2 vs bridge.run on the same pool."""
    n = 20 if quick else 200
    job = {"seconds": 1.0}
    w = bench.worker("prefork", 2, "d-naive")
    try:
        naive = bench.run(w, "(d) naive SDK run_sync task, prefork -c 2", "bench.naive",
                          lambda i: ({**job, "i": i}, "sleep"), n)
        ours = bench.run(w, "(d) bridge.run, prefork -c 2", "bridge.run", lambda i: ({**job, "i": i}, "sleep"), n)
    finally:
        w.stop()
    return [f"(d) {n} x 1 s jobs on prefork -c 2: bridge {ours.wall:.1f} s, naive SDK task {naive.wall:.1f} s: "
            f"bridge {naive.wall / ours.wall:.1f} x faster"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.celery", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every part")
    parser.add_argument("--only", default="a,b,c", help="which parts to run (a,b,c,d)")
    args = parser.parse_args()
    parts = args.only.split(",")

    from bridge.embedded_redis import EmbeddedRedis, free_port

    redis_server = EmbeddedRedis(require_real=True).start()
    endpoint = Endpoint(free_port(), workers=(1100 if args.quick else 10_100))
    bench = Bench(redis_server.url, endpoint)
    proc = getattr(redis_server, "_proc", None)
    bench.redis_pid = proc.pid if proc is not None else 0
    print(f"bench.celery: redis-server {redis_server.url}, endpoint {endpoint.base_url}, "
          f"{os.cpu_count()} CPUs", flush=True)
    summary: list[str] = []
    try:
        for part in parts:
            summary += {"a": part_a, "b": part_b, "c": part_c, "d": part_d}[part](bench, args.quick)
    finally:
        endpoint.stop()
        redis_server.stop()
    print("\nsummary")
    for line in summary:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
