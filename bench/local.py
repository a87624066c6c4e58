"""Local endpoint throughput: ``bridge serve`` vs the runpod SDK's own local test server.

``python -m bench.local [--quick]``. The baseline is what a runpod user has without bridge:
``python handler.py --rp_serve_api`` (runpod 1.12.0, FastAPI/uvicorn). Both serve the same
async handler, and both are driven by the same aiohttp client through ``POST /runsync``
with a fixed number of requests in flight:

- zero-work jobs (server overhead per job);
- jobs that ``await asyncio.sleep`` (can the server run jobs concurrently?);
- jobs that ``time.sleep`` in a sync handler (does a blocking handler stall the server?).

Both servers run as subprocesses on 127.0.0.1 with their request logging off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HANDLERS = '''
import asyncio, time
async def ahandler(job):
    s = job["input"].get("sleep", 0)
    if s:
        await asyncio.sleep(s)
    return job["input"]
def shandler(job):
    s = job["input"].get("sleep", 0)
    if s:
        time.sleep(s)
    return job["input"]
if __name__ == "__main__":
    import sys, runpod
    kind = sys.argv.pop(1)
    runpod.serverless.start({"handler": ahandler if kind == "async" else shandler})
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during startup")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def start_bridge(path: str, kind: str) -> tuple[subprocess.Popen[Any], str]:
    bridge = str(Path(sys.executable).parent / "bridge")
    func = "ahandler" if kind == "async" else "shandler"
    proc = subprocess.Popen([bridge, "serve", f"{path}:{func}", "-e", "bench", "--port", "0", "--workers", "1000"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    match = re.search(r"(http://\S+/v2)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise RuntimeError("bridge serve did not print its URL")
    return proc, f"{match.group(1)}/bench/runsync"


def start_runpod(path: str, kind: str) -> tuple[subprocess.Popen[Any], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, path, kind, "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port),
         "--rp_log_level", "ERROR"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.path.dirname(path),
        env={**os.environ, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"},
    )
    _wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}/runsync"


async def drive(url: str, jobs: int, in_flight: int, sleep: float) -> tuple[float, int]:
    """Wall seconds for ``jobs`` runsync calls, ``in_flight`` at a time; and how many completed."""
    done = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=in_flight)) as session:
        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                i = queue.get_nowait()
                async with session.post(url, json={"input": {"i": i, "sleep": sleep}}) as r:
                    body = await r.json()
                if body.get("status") == "COMPLETED":
                    done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return time.perf_counter() - start, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    n_zero, n_sleep, in_flight, pause = (200, 20, 20, 0.2) if args.quick else (2000, 200, 100, 0.5)
    scenarios = [
        (f"{n_zero} zero-work jobs, {in_flight} in flight (async handler)", "async", n_zero, 0.0),
        (f"{n_sleep} jobs awaiting {pause} s, {in_flight} in flight (async handler)", "async", n_sleep, pause),
        (f"{n_sleep // 4} jobs blocking {pause} s, {in_flight} in flight (sync handler)", "sync", n_sleep // 4, pause),
    ]
    rows: list[tuple[str, str, float, int, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench_handlers.py")
        Path(path).write_text(HANDLERS)
        for title, kind, jobs, sleep in scenarios:
            for name, start in (("bridge serve", start_bridge), ("runpod --rp_serve_api", start_runpod)):
                proc, url = start(path, kind)
                try:
                    wall, done = asyncio.run(drive(url, jobs, in_flight, sleep))
                finally:
                    proc.terminate()
                    proc.wait(10)
                rows.append((title, name, wall, done, jobs))
    print(f"\n{'scenario':<58} {'server':<22} {'wall s':>8} {'jobs/s':>9} {'ok':>6} {'vs runpod':>10}")
    for i, (title, name, wall, done, jobs) in enumerate(rows):
        base = rows[i - 1][2] if i % 2 else rows[i + 1][2]
        ratio = f"{base / wall:.1f}x" if name == "bridge serve" else "1.0x"
        print(f"{title:<58} {name:<22} {wall:>8.2f} {jobs / wall:>9.1f} {done:>3}/{jobs:<3} {ratio:>9}")
    print("\n'vs runpod' = runpod server wall time / bridge serve wall time (higher is better for bridge).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
