"""``bridge serve`` as a real subprocess: starts, serves, binds loopback, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cli.serving import BRIDGE, serve_processes
from cli.serving import ServeProcess as Served

from .test_faults_security import _listening_addresses

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served() -> Iterator[list[Served]]:
    yield from serve_processes()


def test_serve_file_handler_binds_loopback_and_stops_on_sigterm(served):
    s = Served("examples/handlers.py:echo", "-e", "echo")
    served.append(s)
    assert s.base_url.startswith("http://127.0.0.1:")
    assert _listening_addresses(s.port) == {"0100007F"}
    r = requests.post(f"{s.base_url}/echo/runsync", json={"input": {"hello": "world"}}, timeout=10)
    assert r.json()["output"] == {"hello": "world"}
    assert s.stop() == 0


def test_serve_module_handler_several_endpoints_and_api_key(served):
    s = Served("examples.handlers:aecho", "--endpoint", "tokens=examples/handlers.py:stream_tokens",
               "--api-key", "k1", "--return-aggregate-stream", env={"PYTHONPATH": str(ROOT)})
    served.append(s)
    auth = {"Authorization": "Bearer k1"}
    assert requests.get(f"{s.base_url}/local/health", timeout=10).status_code == 401
    r = requests.post(f"{s.base_url}/local/runsync", json={"input": [1]}, headers=auth, timeout=10)
    assert r.json()["output"] == [1]
    r = requests.post(f"{s.base_url}/tokens/runsync", json={"input": {"text": "a b"}}, headers=auth, timeout=10)
    assert r.json()["output"] == ["a", "b"]
    assert s.stop(signal.SIGINT) == 0


def test_serve_runpod_profile_and_faults(served):
    s = Served("examples/handlers.py:echo", "--profile", "runpod", "--rate-limit", "health=1/60")
    served.append(s)
    codes = [requests.get(f"{s.base_url}/local/health", timeout=10).status_code for _ in range(2)]
    assert codes == [200, 429]
    purge = [requests.post(f"{s.base_url}/local/purge-queue", timeout=10).status_code for _ in range(3)]
    assert purge == [200, 200, 429]  # the profile's own limits still apply


def test_serve_rejects_bad_usage():
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BRIDGE, "serve", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)

    missing = run("--port", "0")
    assert missing.returncode == 2 and "HANDLER" in missing.stderr
    both = run("examples/handlers.py:echo", "--worker-command", "python w.py", "--port", "0")
    assert both.returncode == 2 and "not both" in both.stderr
    bad_file = run("nowhere.py:handler", "--port", "0")
    assert bad_file.returncode == 7 and "does not exist" in bad_file.stderr
    bad_spec = run("no_colon", "--port", "0")
    assert bad_spec.returncode == 7 and "spec" in bad_spec.stderr


@pytest.mark.slow
def test_serve_worker_command_runs_jobs_in_a_real_runpod_worker(served):
    command = f"{sys.executable} examples/runpod_worker/handler.py"
    s = Served("--worker-command", command, "-e", "workers", "--endpoint", "echo=examples/handlers.py:echo")
    served.append(s)
    r = requests.post(f"{s.base_url}/workers/runsync", json={"input": {"op": "echo", "x": 1}}, timeout=60)
    body = r.json()
    assert body["status"] == "COMPLETED" and body["output"]["echo"] == {"op": "echo", "x": 1}
    assert body["output"]["pid"] != s.proc.pid  # ran in the worker process, not the server
    assert requests.post(f"{s.base_url}/echo/runsync", json={"input": 2}, timeout=10).json()["output"] == 2
    assert s.stop() == 0
