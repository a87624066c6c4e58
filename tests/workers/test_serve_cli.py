"""``bridge serve --worker-command`` as a real subprocess: workers start, run jobs, and are
gone after the server stops, cleanly (SIGTERM) or not (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cli.serving import BRIDGE, ROOT, serve_processes
from cli.serving import ServeProcess as Serve

from bridge.testing import wait_until

from .conftest import EXAMPLES


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


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    yield from serve_processes()


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
    done = subprocess.run([BRIDGE, "serve", "--port", "0", "--worker-command", "no-such-python-xyz handler.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 7 and "was not found" in done.stderr
