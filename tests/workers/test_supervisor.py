"""The worker supervisor and the worker routes' edges: environment, bad commands, crash
loops, ping silence, auth, clean shutdown."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bridge import errors
from bridge.local.worker_procs import split_command, worker_env
from bridge.testing import LocalEndpoint

from .conftest import (
    EXAMPLES,
    holder,
    job_field,
    make_worker_endpoint,
    pids,
    runner,
    wait_ready,
    wait_until,
    worker_command,
)


def test_worker_env_is_what_the_runpod_sdk_reads() -> None:
    env = worker_env("http://127.0.0.1:9/v2", "ep", "w1-1", "tok", ping_interval=2.5,
                     base={"PATH": "/bin", "RUNPOD_REALTIME_PORT": "8000", "RUNPOD_LOG_LEVEL": "DEBUG"})
    assert env["RUNPOD_WEBHOOK_GET_JOB"] == "http://127.0.0.1:9/v2/ep/job-take/$ID?gpu=bridge-local&worker_token=tok"
    assert env["RUNPOD_WEBHOOK_POST_OUTPUT"].startswith("http://127.0.0.1:9/v2/ep/job-done/$RUNPOD_POD_ID/$ID?")
    assert env["RUNPOD_WEBHOOK_POST_STREAM"].startswith("http://127.0.0.1:9/v2/ep/job-stream/$RUNPOD_POD_ID/$ID?")
    assert env["RUNPOD_WEBHOOK_PING"].startswith("http://127.0.0.1:9/v2/ep/ping/$RUNPOD_POD_ID?")
    assert env["RUNPOD_POD_ID"] == "w1-1" and env["RUNPOD_AI_API_KEY"] == "tok"
    assert env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == env["RUNPOD_SKIP_GPU_CHECK"] == "true"
    assert env["RUNPOD_PING_INTERVAL"] == "2500"
    assert "RUNPOD_REALTIME_PORT" not in env  # would make the SDK serve HTTP instead of polling
    assert env["RUNPOD_LOG_LEVEL"] == "DEBUG" and env["PATH"] == "/bin"


def test_a_command_that_cannot_run_is_a_configuration_error() -> None:
    with pytest.raises(errors.ConfigurationError, match="not found"):
        split_command("no-such-interpreter-xyz handler.py")
    with pytest.raises(errors.ConfigurationError, match="empty"):
        split_command("  ")
    with pytest.raises(errors.ConfigurationError, match="worker script 'nope.py' does not exist"):
        split_command(f"{sys.executable} nope.py", cwd=str(EXAMPLES))
    assert split_command(f"{sys.executable} handler.py", cwd=str(EXAMPLES))[1] == "handler.py"
    with pytest.raises(errors.ConfigurationError):
        LocalEndpoint(None, worker_command="no-such-interpreter-xyz handler.py")


def test_worker_routes_need_the_worker_token(sync_worker: LocalEndpoint) -> None:
    take = f"{sync_worker.base_url}/{sync_worker.endpoint_id}/job-take/intruder?gpu=x"
    assert requests.get(take, timeout=10).status_code == 401
    # The endpoint's own API surface is unaffected, and unknown endpoints run no workers.
    assert requests.get(f"{sync_worker.base_url}/nope/ping/w?worker_token=x", timeout=10).status_code == 404


@pytest.fixture(scope="module")
def crashy() -> Iterator[LocalEndpoint]:
    """A worker command that always exits at once; hand-made workers may join (accept_unknown)."""
    ep = make_worker_endpoint([sys.executable, "-c", "import sys; sys.exit(3)"], endpoint_id="crashy",
                              worker_options={"accept_unknown": True, "hold": 2.0, "start_attempts": 1000})
    try:
        yield ep
    finally:
        ep.close()


def test_crash_looping_worker_is_unhealthy_and_loses_no_queued_job(crashy: LocalEndpoint) -> None:
    wait_until(lambda: crashy.health()["workers"]["unhealthy"] == 1, timeout=20)
    job_id = requests.post(crashy.url("run"), json={"input": {}}, timeout=10).json()["id"]
    restarts = runner(crashy).supervisor.restarts
    wait_until(lambda: runner(crashy).supervisor.restarts > restarts, timeout=20)
    assert job_field(crashy, job_id) == "IN_QUEUE"
    requests.post(crashy.url("cancel", job_id), timeout=10)


def test_workers_that_never_start_give_up_and_fail_the_jobs_instead_of_queueing_them() -> None:
    given_up: list[errors.ConfigurationError] = []
    command = [sys.executable, "-c", "import sys; print('model file missing'); sys.exit(3)"]
    ep = make_worker_endpoint(command, count=2, endpoint_id="broken",
                              worker_options={"start_attempts": 2, "on_give_up": given_up.append})
    try:
        queued = requests.post(ep.url("run"), json={"input": {}}, timeout=10).json()["id"]
        wait_until(lambda: given_up, timeout=30)
        failed = runner(ep).supervisor.failed
        assert given_up == [failed] and failed is not None
        assert "exited with code 3 before contacting the endpoint, 2 times in a row" in str(failed)
        assert "model file missing" in str(failed)
        # The job that was waiting, and one sent afterwards, end FAILED with the reason.
        later = requests.post(ep.url("run"), json={"input": {}}, timeout=10).json()["id"]
        for job_id in (queued, later):
            wait_until(lambda job_id=job_id: job_field(ep, job_id) == "FAILED", timeout=10)
            assert "could start" in job_field(ep, job_id, "error")
        health = ep.health()
        assert health["workers"]["unhealthy"] == 2 and health["workers"]["ready"] == 0
        assert runner(ep).supervisor.started_total == 4  # 2 slots x 2 attempts, then no more
    finally:
        ep.close()


def test_a_job_taken_by_a_poll_whose_worker_hung_up_goes_to_the_next_worker(crashy: LocalEndpoint) -> None:
    token = runner(crashy).host.token
    take = f"{crashy.base_url}/crashy/job-take/{{}}?gpu=x&worker_token={token}"
    # A hand-made worker opens a job-take poll and hangs up before a job arrives ...
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(take.format("hangs-up"), timeout=0.3)
    job_id = requests.post(crashy.url("run"), json={"input": {"n": 1}}, timeout=10).json()["id"]
    # ... the job it would have been handed is released, and the next poll gets it.
    got = requests.get(take.format("next"), timeout=10)
    assert got.status_code == 200 and got.json() == {"id": job_id, "input": {"n": 1}}
    assert job_field(crashy, job_id) == "IN_PROGRESS"
    done = f"{crashy.base_url}/crashy/job-done/next/{job_id}?gpu=x&isStream=false&worker_token={token}"
    # The SDK's encoding: JSON text labelled as a form.
    requests.post(done, data='{"output": {"ok": true}}', timeout=10,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert job_field(crashy, job_id) == "COMPLETED" and job_field(crashy, job_id, "output") == {"ok": True}


@pytest.mark.slow
def test_silent_worker_times_out_its_job_and_is_replaced_then_all_stop_cleanly(tmp_path: Path) -> None:
    ep = make_worker_endpoint(worker_command("handler.py"), endpoint_id="silent",
                              worker_options={"ping_interval": 1.0, "lost_after": 3.0})
    groups: list[int] = []
    try:
        wait_ready(ep, 1)
        release = tmp_path / "release"
        job_id = requests.post(ep.url("run"), json={"input": {"op": "progress", "release": str(release)}},
                               timeout=10).json()["id"]
        wait_until(lambda: holder(ep, job_id), timeout=20)
        frozen = holder(ep, job_id)
        assert frozen is not None
        pid = pids(ep)[frozen]
        os.killpg(pid, signal.SIGSTOP)  # the worker and its heartbeat process go silent
        wait_until(lambda: job_field(ep, job_id) == "TIMED_OUT", timeout=20)
        assert "stopped pinging" in job_field(ep, job_id, "error")
        wait_ready(ep, 1)
        assert frozen not in pids(ep)
        groups = list(pids(ep).values())
    finally:
        ep.close()
    for pgid in groups:  # the worker, its heartbeat child: all gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
