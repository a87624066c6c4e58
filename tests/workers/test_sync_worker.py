"""A real runpod worker with a plain (sync) handler, driven through bridge's client.

The worker is ``examples/runpod_worker/handler.py`` run unchanged by the runpod SDK; every
job goes public API → job store → job-take long poll → worker → job-done → public API.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import bridge
from bridge import errors
from bridge.testing import LocalEndpoint

from .conftest import holder, pids, runner, wait_ready, wait_until


@pytest.fixture
def client(idle_sync_worker: LocalEndpoint):
    with bridge.Endpoint(idle_sync_worker.endpoint_id, base_url=idle_sync_worker.base_url) as endpoint:
        yield endpoint


def blocked_job(client: bridge.Endpoint, ep: LocalEndpoint, release: Path) -> tuple[bridge.Job, str]:
    """A job running on a worker until ``release`` exists, and the id of that worker."""
    job = client.run({"op": "progress", "release": str(release)})
    wait_until(lambda: job.status() == "IN_PROGRESS", timeout=20)
    wid = wait_until(lambda: holder(ep, job.job_id), timeout=5)
    return job, wid


def test_plain_handler_output_comes_back_from_the_worker_process(client, idle_sync_worker):
    out = client.run_sync({"op": "echo", "x": 1}, timeout=30)
    assert out["echo"] == {"op": "echo", "x": 1}
    assert out["pid"] in pids(idle_sync_worker).values()
    assert out["pid"] != os.getpid()


def test_run_then_status_shows_runpod_shape(client):
    job = client.run({"op": "echo", "n": 2})
    assert job.output(timeout=30)["echo"] == {"op": "echo", "n": 2}
    body = job.fetch()
    assert body["status"] == "COMPLETED"
    assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)


def test_error_dict_fails_the_job_and_keeps_the_rest_as_output(client):
    job = client.run({"op": "error", "message": "bad input"})
    with pytest.raises(errors.JobFailed) as info:
        job.output(timeout=30)
    assert info.value.error == "bad input"
    body = job.fetch()
    assert body["status"] == "FAILED" and body["output"] == {"partial": 1}


def test_exception_fails_the_job_with_the_sdk_error_json(client):
    with pytest.raises(errors.JobFailed) as info:
        client.run_sync({"op": "raise", "message": "kaboom"}, timeout=30)
    detail = json.loads(info.value.error)
    assert detail["error_type"] == "<class 'ValueError'>"
    assert detail["error_message"] == "kaboom"
    assert detail["runpod_version"] == "1.12.0"  # it really ran in the runpod SDK
    assert detail["worker_id"].startswith("w")


def test_empty_dict_completes_without_output(client):
    job = client.run({"op": "empty"})
    assert job.output(timeout=30) is None
    assert "output" not in job.fetch()


def test_progress_update_is_visible_while_in_progress(client, tmp_path: Path):
    release = tmp_path / "release"
    job = client.run({"op": "progress", "value": {"pct": 50}, "release": str(release)})
    wait_until(lambda: job.fetch().get("output") == {"pct": 50}, timeout=20)
    assert job.fetch()["status"] == "IN_PROGRESS"
    release.touch()
    assert job.output(timeout=30) == {"done": True}


def test_health_counts_real_workers(client, idle_sync_worker, tmp_path: Path):
    workers = client.health()["workers"]
    assert workers["idle"] == 2 and workers["ready"] == 2 and workers["running"] == 0
    release = tmp_path / "release"
    job = client.run({"op": "progress", "release": str(release)})
    wait_until(lambda: client.health()["workers"]["running"] == 1, timeout=20)
    assert client.health()["jobs"]["inProgress"] == 1
    release.touch()
    job.output(timeout=30)


def test_idle_workers_long_poll_instead_of_spinning(client, idle_sync_worker):
    host = runner(idle_sync_worker).host
    before = host.requests
    # A job of about a second on one worker while the other sits idle in its polls.
    assert client.run_sync({"op": "sleep", "seconds": 1}, timeout=30) == {"slept": 1}
    # One take, one done, a ping or two, the idle worker's held polls: a handful, where a
    # platform answering 204 at once gets thousands of requests a second.
    assert host.requests - before < 20


def test_cancel_of_a_sync_handler_drops_its_late_result(client, idle_sync_worker, tmp_path: Path):
    release = tmp_path / "release"
    job, _wid = blocked_job(client, idle_sync_worker, release)
    assert job.cancel()["status"] == "CANCELLED"
    # A sync handler cannot be interrupted; let it return: its result must not revive the job.
    release.touch()
    wait_until(lambda: idle_sync_worker.health()["workers"]["ready"] == 2, timeout=20)
    body = job.fetch()
    assert body["status"] == "CANCELLED" and "output" not in body
    with pytest.raises(errors.JobCancelled):
        job.output(timeout=5)


def test_execution_timeout_times_out_the_job(client, tmp_path: Path):
    release = tmp_path / "release"
    job = client.run({"op": "progress", "release": str(release)}, policy={"executionTimeout": 300})
    with pytest.raises(errors.JobTimedOut) as info:
        job.output(timeout=30)
    assert "executionTimeout" in str(info.value.error)
    release.touch()


def test_refresh_worker_recycles_the_worker_process(client, idle_sync_worker):
    before = pids(idle_sync_worker)
    out = client.run_sync({"op": "refresh"}, timeout=30)
    assert out == {"pid": out["pid"]}  # refresh_worker is not part of the output
    assert out["pid"] in before.values()
    # The process that ran it exits; a new one takes its place under a new worker id.
    wait_until(lambda: out["pid"] not in pids(idle_sync_worker).values(), timeout=20)
    wait_ready(idle_sync_worker, 2)
    after = pids(idle_sync_worker)
    assert len(after) == 2 and set(after) != set(before)
    assert runner(idle_sync_worker).supervisor.restarts >= 1


def test_worker_killed_mid_job_times_out_the_job_and_is_replaced(client, idle_sync_worker, tmp_path: Path):
    release = tmp_path / "release"
    job, wid = blocked_job(client, idle_sync_worker, release)
    os.kill(pids(idle_sync_worker)[wid], signal.SIGKILL)
    with pytest.raises(errors.JobTimedOut) as info:
        job.output(timeout=30)
    assert f"worker {wid} was killed by SIGKILL" in str(info.value.error)
    wait_ready(idle_sync_worker, 2)
    assert wid not in pids(idle_sync_worker)
    # Like on RunPod, a TIMED_OUT job can be retried; it runs on a live worker.
    release.touch()
    job.retry()
    assert job.output(timeout=30) == {"done": True}


def test_large_results_come_back_and_oversized_ones_fail_the_job(client):
    two_mb = 2 * 1024 * 1024  # over aiohttp's default 1 MiB request body limit
    assert client.run_sync({"op": "big", "size": two_mb}, timeout=30) == {"blob": "x" * two_mb}
    with pytest.raises(errors.JobFailed) as info:
        client.run_sync({"op": "big", "size": 21 * 1024 * 1024}, timeout=30)
    assert "over the 20 MB" in info.value.error
