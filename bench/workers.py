"""Real runpod workers under the local endpoint: throughput, and what idle workers cost.

``python -m bench.workers [--quick]``

1. Throughput: the same zero-work echo jobs through

   - the baseline: an in-process handler with 4 workers (``LocalEndpoint(handler, workers=4)``);
   - 4 real runpod 1.12.0 worker processes running ``examples/runpod_worker/handler.py``
     (a sync handler, the SDK's default concurrency of 1);
   - 4 real workers running ``async_handler.py --concurrency 4`` (the SDK takes jobs in
     batches with job-take-batch and runs up to 4 at once per process).

   All jobs are submitted with ``POST /run`` first, then the clock runs until the endpoint
   has completed them all (read from the server, so client polling costs nothing).

2. Idle cost: worker-route requests per second that 4 idle real workers send the endpoint,
   with the long polls (job-take and job-stop held 30 s, ping every 10 s: the defaults)
   against a platform that answers job-take at once (``hold=0``; what a naive stand-in does).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bridge.local.worker_procs import WorkerRunner
from bridge.testing import LocalEndpoint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "runpod_worker"
WORKERS = 4


def _echo(job: dict[str, Any]) -> Any:
    return job["input"]


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done within {timeout} s")
        time.sleep(0.01)


def _worker_endpoint(script: str, *flags: str, **worker_options: Any) -> LocalEndpoint:
    ep = LocalEndpoint(None, endpoint_id="bench", worker_command=[sys.executable, str(EXAMPLES / script), *flags],
                       worker_count=WORKERS, worker_options={"quiet": True, **worker_options})
    try:
        # "ready" counts workers waiting in a job-take poll; with hold=0 there is none for long.
        _wait(lambda: ep.health()["workers"]["idle"] >= WORKERS, 60)
    except BaseException:
        ep.close()
        raise
    return ep


def _throughput(ep: LocalEndpoint, jobs: int) -> float:
    session = requests.Session()
    done_before = ep.health()["jobs"]["completed"]
    started = time.perf_counter()
    for i in range(jobs):
        response = session.post(ep.url("run"), json={"input": {"op": "echo", "i": i}}, timeout=30)
        response.raise_for_status()
    _wait(lambda: ep.health()["jobs"]["completed"] - done_before >= jobs, 600)
    elapsed = time.perf_counter() - started
    session.close()
    return elapsed


def _idle_rate(ep: LocalEndpoint, window: float) -> tuple[float, dict[str, int]]:
    runner = ep.endpoint().runner
    assert isinstance(runner, WorkerRunner)
    host = runner.host
    before = dict(host.route_counts)
    time.sleep(window)  # a measurement window, not synchronisation
    after = dict(host.route_counts)
    delta = {route: after.get(route, 0) - before.get(route, 0) for route in after}
    return sum(delta.values()) / window, {k: v for k, v in delta.items() if v}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    jobs = 40 if args.quick else 200
    window = 3.0 if args.quick else 20.0

    rows: list[tuple[str, int, float]] = []
    with LocalEndpoint(_echo, endpoint_id="bench", workers=WORKERS) as ep:
        _throughput(ep, 10)  # warm-up
        rows.append((f"in-process handler, {WORKERS} workers (baseline)", jobs, _throughput(ep, jobs)))
    ep = _worker_endpoint("handler.py")
    try:
        _throughput(ep, WORKERS)
        rows.append((f"{WORKERS} real runpod workers, sync handler", jobs, _throughput(ep, jobs)))
        _wait(lambda: ep.health()["workers"]["ready"] >= WORKERS, 30)  # all back in their polls
        idle_long = _idle_rate(ep, window)
    finally:
        ep.close()
    ep = _worker_endpoint("async_handler.py", "--concurrency", "4")
    try:
        _throughput(ep, WORKERS)
        rows.append((f"{WORKERS} real runpod workers, async, concurrency 4", jobs, _throughput(ep, jobs)))
    finally:
        ep.close()
    ep = _worker_endpoint("handler.py", hold=0.0)
    try:
        idle_spin = _idle_rate(ep, min(window, 3.0))
    finally:
        ep.close()

    base = jobs / rows[0][2]
    print(f"\nThroughput: {jobs} zero-work jobs submitted with /run (one client, in turn), until all COMPLETED")
    print(f"{'runner':<48} {'jobs':>5} {'seconds':>8} {'jobs/s':>9} {'vs baseline':>12}")
    for name, n, seconds in rows:
        rate = n / seconds
        print(f"{name:<48} {n:>5} {seconds:>8.2f} {rate:>9.1f} {rate / base:>11.3f}x")
    print(f"\nIdle cost: worker-route requests/s from {WORKERS} idle real workers")
    print(f"{'platform':<48} {'req/s':>9}  per route in the window")
    print(f"{'long polls (hold 30 s, ping 10 s) [bridge]':<48} {idle_long[0]:>9.2f}  {idle_long[1]}")
    print(f"{'job-take answered at once (hold 0) [baseline]':<48} {idle_spin[0]:>9.1f}  {idle_spin[1]}")
    if idle_long[0] > 0:
        print(f"long polls cost {idle_spin[0] / idle_long[0]:.0f}x fewer requests than answering at once")
    else:
        print("long polls: no worker request at all in the window (polls are re-sent every 30 s)")
    print("\nA sync runpod worker (concurrency 1) sleeps 1 s in the SDK between jobs, so each process"
          " does at most ~1 job/s, on RunPod as here; async handlers with concurrency_modifier do better.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
