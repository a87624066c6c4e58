"""Job policies: executionTimeout, ttl, result retention, lowPriority, and the runpod profile's bounds."""

from __future__ import annotations

import threading

from .conftest import Client, wait_until
from .test_control import Gate


def test_execution_timeout_times_out_and_cancels_async_handler(local_endpoint):
    gate = Gate()
    c = Client(local_endpoint(gate))
    job_id = c.run({}, policy={"executionTimeout": 200})
    body = c.wait(job_id)
    assert body["status"] == "TIMED_OUT"
    assert "executionTimeout" in body["error"]
    assert gate.cancelled.wait(5)


def test_execution_timeout_of_sync_handler_drops_late_result(local_endpoint):
    release = threading.Event()
    finished = threading.Event()

    def slow(job):
        release.wait(10)
        finished.set()
        return "late"

    c = Client(local_endpoint(slow))
    job_id = c.run({}, policy={"executionTimeout": 100})
    assert c.wait(job_id)["status"] == "TIMED_OUT"
    release.set()
    assert finished.wait(5)
    # the late result arrives on the loop after the thread ends; it must not overwrite
    follow = c.run({})
    c.wait(follow)
    body = c.status(job_id)
    assert body["status"] == "TIMED_OUT" and "output" not in body


def test_endpoint_default_execution_timeout(local_endpoint):
    gate = Gate()
    c = Client(local_endpoint(gate, execution_timeout=0.15))
    assert c.wait(c.run())["status"] == "TIMED_OUT"


def test_ttl_deletes_queued_and_running_jobs(local_endpoint):
    gate = Gate()
    c = Client(local_endpoint(gate, workers=1))
    running = c.run("r", policy={"ttl": 300})
    c.wait_status(running, "IN_PROGRESS")
    queued = c.run("q", policy={"ttl": 300})
    assert c.status(queued)["status"] == "IN_QUEUE"
    wait_until(lambda: c.get("status", queued).status_code == 404)
    wait_until(lambda: c.get("status", running).status_code == 404)
    assert gate.cancelled.wait(5), "a running job past its ttl must be stopped"
    assert c.get("health").json()["jobs"]["inQueue"] == 0


def test_retention_expires_finished_jobs(local_endpoint):
    c = Client(local_endpoint(retention=0.3, sync_retention=0.3))
    job_id = c.run({"a": 1})
    assert c.wait(job_id)["output"] == {"a": 1}
    wait_until(lambda: c.get("status", job_id).status_code == 404)
    sync = c.post("runsync", json={"input": {"b": 2}}).json()
    assert c.status(sync["id"])["output"] == {"b": 2}
    wait_until(lambda: c.get("status", sync["id"]).status_code == 404)


def test_default_retention_is_runpods(local_endpoint):
    ep = local_endpoint()
    c = Client(ep)
    run_state = ep.job_state(c.run())
    sync_id = c.post("runsync", json={"input": {}}).json()["id"]
    assert run_state["retentionMs"] == 30 * 60 * 1000
    assert ep.job_state(sync_id)["retentionMs"] == 60 * 1000
    assert run_state["executionTimeoutMs"] == 600_000 and run_state["ttlMs"] == 86_400_000


def test_low_priority_jobs_run_after_normal_ones(local_endpoint):
    gate = Gate()
    order: list[str] = []

    async def handler(job):
        order.append(job["input"])
        if job["input"] == "first":
            return await gate(job)
        return job["input"]

    c = Client(local_endpoint(handler, workers=1))
    first = c.run("first")
    c.wait_status(first, "IN_PROGRESS")
    low = c.run("low", policy={"lowPriority": True})
    normal = c.run("normal")
    gate.release.set()
    c.wait(low)
    c.wait(normal)
    assert order == ["first", "normal", "low"]


def test_runpod_profile_applies_minimums_and_local_does_not(local_endpoint):
    strict = local_endpoint(profile="runpod")
    loose = local_endpoint()
    policy = {"executionTimeout": 100, "ttl": 100}
    gate = Gate()
    strict.add_endpoint("gated", gate)
    state = strict.job_state(Client(strict, "gated").run({}, policy=policy))
    assert state["executionTimeoutMs"] == 5000 and state["ttlMs"] == 10_000
    gate.release.set()
    loose_state = loose.job_state(Client(loose).run({}, policy={"executionTimeout": 100, "ttl": 60_000}))
    assert loose_state["executionTimeoutMs"] == 100
