"""Processes the Celery benchmark runs: Celery worker subprocesses (peak RSS and CPU of the
whole process tree) and ``bridge serve`` in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = str(ROOT / "examples" / "handlers.py")
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


class Worker:
    """A worker subprocess; tracks the peak RSS of its process tree (main + children)."""

    def __init__(self, env: dict[str, str], pool: str, concurrency: int, name: str,
                 app: str = "bench._celery_app") -> None:
        self.name = f"{name}-{os.getpid()}@bench"
        self.proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", app, "worker", "-P", pool, "-c", str(concurrency),
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

    def pids(self) -> list[int]:
        return [self.proc.pid, *_children(self.proc.pid)]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

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


