"""``bridge serve --worker-command`` as a real subprocess: workers start, run jobs, and are
gone after the server stops, cleanly (SIGTERM) or not (SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bridge.testing import wait_until

from .conftest import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = [str(Path(sys.executable).parent / "bridge")]  # the console script of this environment


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


class Serve:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*BRIDGE, "serve", "--port", "0", *args], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+/v2)", line)
        assert match, f"no base URL printed: {line!r}"
        self.base_url = match.group(1)

    def health(self, endpoint_id: str) -> dict:  # type: ignore[type-arg]
        return dict(requests.get(f"{self.base_url}/{endpoint_id}/health", timeout=10).json())


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    made: list[Serve] = []
    yield made
    for s in made:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)


@pytest.mark.slow
def test_serve_runs_worker_processes_and_stops_them_all(serves: list[Serve]) -> None:
    command = f"{sys.executable} {EXAMPLES / 'handler.py'}"
    clean = Serve("--worker-command", command, "--worker-count", "2", "-e", "w")
    crash = Serve("--worker-command", command, "-e", "w")
    serves += [clean, crash]
    wait_until(lambda: clean.health("w")["workers"]["ready"] == 2, timeout=30)
    wait_until(lambda: crash.health("w")["workers"]["ready"] == 1, timeout=30)
    body = requests.post(f"{clean.base_url}/w/runsync", json={"input": {"op": "echo"}}, timeout=30).json()
    workers = children(clean.proc.pid)
    assert len(workers) == 2 and body["output"]["pid"] in workers
    # SIGTERM: the server stops its workers (and their heartbeat processes) and exits 0.
    clean.proc.send_signal(signal.SIGTERM)
    assert clean.proc.wait(timeout=30) == 0
    for pgid in workers:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
    # SIGKILL: nothing can clean up, yet the workers do not outlive the server.
    orphans = children(crash.proc.pid)
    assert len(orphans) == 1
    crash.proc.kill()
    crash.proc.wait(10)
    wait_until(lambda: not any(alive(p) for p in orphans), timeout=30)


def test_serve_refuses_a_worker_command_that_does_not_exist() -> None:
    done = subprocess.run([*BRIDGE, "serve", "--port", "0", "--worker-command", "no-such-python-xyz handler.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 7 and "was not found" in done.stderr
