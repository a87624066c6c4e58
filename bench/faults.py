"""Redis faults with real processes: ``python -m bench.faults [--quick]``.

Redis (AOF, ``appendfsync always``) killed -9 with 300 x 5 s ``bridge.run`` jobs in flight
and started again on its port after 60 s (``--quick``: 3 s, what CI runs in tests/faults),
on prefork and threads workers (``celery -A bridge.app worker``); prints, per pool: correct
results, failures, unfinished tasks 60 s after Redis is back, possible double submits,
remote jobs created. Scenario: tests/faults/fault_harness.py.

Then the submit window under load: one gateway (in this process) submits 2,000 jobs at once
to the local endpoint, its Redis with AOF ``appendfsync always``; the window of each job is
from sending its ``/run`` to its job id being in the journal. The job id is written on its
own the moment ``/run`` answers (bridge now) against the baseline, the write auto-pipelined
with the other jobs' journal writes of the same loop turn (bridge before issue 11), in one
run; ratios are now / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "faults"))

from fault_harness import API_KEY, endpoint, run_batch_outage, run_outage  # noqa: E402

from bridge import keys  # noqa: E402
from bridge.embedded_redis import EmbeddedRedis  # noqa: E402
from bridge.gateway.core import JobSpec, get_gateway, reset_gateway  # noqa: E402
from bridge.gateway.journal import Journal  # noqa: E402


async def _shared_record(self: Journal, task_id: str, job_id: str) -> None:
    """The baseline: the job id write auto-pipelined with every other journal write."""
    mapping = {"job_id": job_id, "state": "SUBMITTED", "submitted_at": f"{time.time():.3f}"}
    await self.batch.call(lambda pipe: pipe.hset(keys.journal(task_id), mapping=mapping))


async def _direct_record(self: Journal, task_id: str, job_id: str) -> None:
    """An alternative: one command per job on the gateway's pool."""
    mapping = {"job_id": job_id, "state": "SUBMITTED", "submitted_at": f"{time.time():.3f}"}
    await self.redis.hset(keys.journal(task_id), mapping=mapping)


MODES = {"own pipeline (now)": None, "shared pipeline (baseline)": _shared_record,
         "one command per job": _direct_record}


def _windows(jobs: int, mode: str) -> list[tuple[float, float]]:
    now = Journal.record
    replacement = MODES[mode]
    if replacement is not None:
        Journal.record = replacement  # type: ignore[method-assign]
    try:
        reset_gateway()
        gateway = get_gateway()

        async def all_jobs() -> Any:
            specs = [JobSpec(task_id=f"window-{i}-{time.time_ns()}", endpoint_id="sleep",
                             input={"seconds": 0.2}) for i in range(jobs)]
            return await asyncio.gather(*(gateway.arun(spec) for spec in specs))

        gateway.call(all_jobs())
        return list(gateway.submit_windows)
    finally:
        Journal.record = now  # type: ignore[method-assign]
        reset_gateway()


def submit_window(jobs: int, rounds: int) -> None:
    """The submit window, now vs the pipelined baseline, interleaved ``rounds`` times."""
    with EmbeddedRedis(require_real=True, aof=True) as server, endpoint() as ep:
        os.environ.update({"BRIDGE_REDIS_URL": server.url, "RUNPOD_API_KEY": API_KEY,
                           "RUNPOD_ENDPOINT_BASE_URL": ep.base_url})
        found: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        for _ in range(rounds):
            for mode in MODES:
                found[mode].extend(_windows(jobs, mode))

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    print(f"submit window under load ({jobs} jobs submitted at once x {rounds}, Redis AOF always), ms:")
    print(f"  {'':28} {'window p50':>11} {'p99':>7} {'max':>7} | {'id write p50':>12} {'p99':>7} {'max':>7}")
    table: dict[str, tuple[list[float], list[float]]] = {}
    for mode, pairs in found.items():
        whole = sorted(run + write for run, write in pairs)
        writes = sorted(write for _, write in pairs)
        table[mode] = whole, writes
        print(f"  {mode:28} {pct(whole, 0.5):11.1f} {pct(whole, 0.99):7.1f} {whole[-1] * 1000:7.1f} | "
              f"{pct(writes, 0.5):12.2f} {pct(writes, 0.99):7.2f} {writes[-1] * 1000:7.2f}")
    (now, now_w), (base, base_w) = table["own pipeline (now)"], table["shared pipeline (baseline)"]
    print(f"  ratio now/baseline: window p50 {pct(now, 0.5) / pct(base, 0.5):.2f}, p99 "
          f"{pct(now, 0.99) / pct(base, 0.99):.2f}; id write p50 {pct(now_w, 0.5) / pct(base_w, 0.5):.2f}, "
          f"p99 {pct(now_w, 0.99) / pct(base_w, 0.99):.2f}, mean {statistics.fmean(now_w) / statistics.fmean(base_w):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 3 s outage instead of 60 s")
    parser.add_argument("--pools", default="prefork,threads")
    parser.add_argument("--window-only", action="store_true", help="only the submit window")
    args = parser.parse_args()
    outage = 3.0 if args.quick else 60.0
    submit_window(500 if args.quick else 2000, 1 if args.quick else 3)
    if args.window_only:
        return 0
    status = 0
    for pool in args.pools.split(","):
        started = time.monotonic()
        figures = run_outage(pool, jobs=300, seconds=5.0, outage=outage, settle=60.0,
                             log=lambda line, pool=pool: print(f"  [{pool}] {line}", flush=True))
        print(f"{pool:8} Redis down {outage:g} s: {figures.line()} ({time.monotonic() - started:.0f} s)")
        ok = (figures.correct == figures.jobs and figures.unfinished == 0 and figures.double_submits == 0
              and figures.worker_alive)
        status = status or (0 if ok else 1)
        batch = run_batch_outage(pool, items=300, seconds=5.0, outage=outage, settle=60.0)
        print(f"{pool:8} Redis down {outage:g} s: {batch.line()}")
        status = status or (0 if batch.exit_code == 0 and batch.correct == batch.items else 1)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
