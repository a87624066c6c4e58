"""cancel, retry, purge-queue and health."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .conftest import Client, wait_until


class Gate:
    """An async handler that waits for the test and records a CancelledError."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.cancelled = threading.Event()
        self.started = threading.Event()

    async def __call__(self, job: dict[str, Any]) -> Any:
        self.started.set()
        try:
            while not self.release.is_set():
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return job["input"]


def test_cancel_running_async_handler_gets_cancelled_error(local_endpoint):
    gate = Gate()
    c = Client(local_endpoint(gate))
    job_id = c.run({"n": 1})
    c.wait_status(job_id, "IN_PROGRESS")
    r = c.post("cancel", job_id)
    assert r.status_code == 200 and r.json() == {"id": job_id, "status": "CANCELLED"}
    assert gate.cancelled.wait(5), "the handler never saw CancelledError"
    body = c.status(job_id)
    assert body["status"] == "CANCELLED" and "output" not in body
    assert c.get("stream", job_id).json()["status"] == "CANCELLED"


def test_cancel_queued_job_never_runs(local_endpoint):
    gate = Gate()
    seen: list[Any] = []

    async def handler(job):
        seen.append(job["input"])
        return await gate(job)

    c = Client(local_endpoint(handler, workers=1))
    first = c.run(1)
    c.wait_status(first, "IN_PROGRESS")
    queued = c.run(2)
    assert c.status(queued)["status"] == "IN_QUEUE"
    assert c.post("cancel", queued).json()["status"] == "CANCELLED"
    gate.release.set()
    c.wait(first)
    follow = c.run(3)
    c.wait(follow)
    assert seen == [1, 3]
    assert c.status(queued)["status"] == "CANCELLED"


def test_cancel_finished_job_reports_its_status_unchanged(local_endpoint):
    c = Client(local_endpoint())
    job_id = c.run({"a": 1})
    c.wait(job_id)
    assert c.post("cancel", job_id).json() == {"id": job_id, "status": "COMPLETED"}
    assert c.status(job_id)["output"] == {"a": 1}


def test_retry_requeues_failed_job_under_same_id(local_endpoint):
    calls: list[int] = []

    def flaky(job):
        calls.append(1)
        if len(calls) == 1:
            return {"error": "first try fails"}
        return {"attempt": len(calls)}

    c = Client(local_endpoint(flaky))
    job_id = c.run({"x": 1})
    assert c.wait(job_id)["status"] == "FAILED"
    r = c.post("retry", job_id)
    assert r.status_code == 200 and r.json() == {"id": job_id, "status": "IN_QUEUE"}
    body = c.wait(job_id)
    assert body["status"] == "COMPLETED" and body["output"] == {"attempt": 2} and "error" not in body
    assert c.get("health").json()["jobs"]["retried"] == 1
    assert c.ep.submissions() == 1


def test_retry_of_cancelled_job_and_refusal_for_completed(local_endpoint):
    gate = Gate()
    c = Client(local_endpoint(gate))
    job_id = c.run("again")
    c.wait_status(job_id, "IN_PROGRESS")
    c.post("cancel", job_id)
    gate.release.set()
    assert c.post("retry", job_id).json()["status"] == "IN_QUEUE"
    assert c.wait(job_id)["output"] == "again"
    r = c.post("retry", job_id)
    assert r.status_code == 400 and "COMPLETED" in r.json()["error"]


def test_purge_removes_only_queued_jobs(local_endpoint):
    gate = Gate()
    c = Client(local_endpoint(gate, workers=1))
    running = c.run("r")
    c.wait_status(running, "IN_PROGRESS")
    queued = [c.run(i) for i in range(3)]
    r = c.post("purge-queue")
    assert r.json() == {"removed": 3, "status": "completed"}
    for job_id in queued:
        assert c.get("status", job_id).status_code == 404
    assert c.status(running)["status"] == "IN_PROGRESS"
    assert c.post("purge-queue").json()["removed"] == 0
    gate.release.set()
    assert c.wait(running)["output"] == "r"


def test_health_has_every_documented_key_and_counts(local_endpoint):
    gate = Gate()

    async def handler(job):
        if job["input"] == "fail":
            return {"error": "no"}
        return await gate(job)

    c = Client(local_endpoint(handler, workers=2))
    c.wait(c.run("fail"))
    running = c.run("ok")
    c.wait_status(running, "IN_PROGRESS")
    other = c.run("other")
    queued = c.run("queued")
    wait_until(lambda: c.get("health").json()["jobs"]["inProgress"] == 2)
    health = c.get("health").json()
    assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert set(health["workers"]) == {"idle", "running", "initializing", "ready", "throttled", "unhealthy"}
    assert health["jobs"] == {"completed": 0, "failed": 1, "inProgress": 2, "inQueue": 1, "retried": 0}
    assert health["workers"]["running"] == 2 and health["workers"]["idle"] == 0
    gate.release.set()
    for job_id in (running, other, queued):
        c.wait(job_id)
    done = c.get("health").json()
    assert done["jobs"]["completed"] == 3 and done["jobs"]["inQueue"] == 0 and done["workers"]["idle"] == 2
