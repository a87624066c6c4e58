"""Contract tests: our sync and asyncio clients (the ``client`` fixture runs each test for
both) against the real local endpoint on loopback: every route and every terminal state."""

from __future__ import annotations

import time
import uuid

import pytest

from bridge import errors
from bridge.testing import wait_until

from . import handlers


def test_run_then_output_returns_the_handler_result(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    job = ep.run({"x": 1, "sleep": 0.5})
    assert job.job_id == job.id
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS")
    assert job.output() == {"echo": {"x": 1, "sleep": 0.5}}
    assert job.status() == "COMPLETED"
    # The wait was one long poll, not a poll loop; status() did not ask again once terminal.
    assert local.stats() == {"run": 1, "status": 1, "status-sync": 1}


def test_output_waits_for_a_running_job_instead_of_returning_none(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    gate = f"g-{uuid.uuid4()}"
    job = ep.run({"gate": gate})
    wait_until(lambda: job.fetch()["status"] == "IN_PROGRESS")
    handlers.gate(gate).set()
    assert job.output(timeout=10) == {"echo": {"gate": gate}}


def test_run_sync_returns_the_output(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    assert ep.run_sync({"y": 2}, timeout=10) == {"echo": {"y": 2}}
    assert local.stats()["runsync"] == 1


def test_run_sync_falls_back_to_waiting_when_runsync_answers_early(local_endpoint, client):
    from bridge.client import PollPolicy

    local = local_endpoint(handlers.work)
    # The endpoint holds runsync for at most the long-poll window (1 s here).
    ep = client(local, poll=PollPolicy(long_poll=1.0))
    assert ep.run_sync({"sleep": 1.5}, timeout=10) == {"echo": {"sleep": 1.5}}
    stats = local.stats()
    assert stats["runsync"] == 1
    assert stats.get("status-sync", 0) >= 1


def test_run_sync_timeout_is_wall_time_and_a_timeout_error(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    gate = f"g-{uuid.uuid4()}"
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        ep.run_sync({"gate": gate}, timeout=1.2)
    assert isinstance(info.value, errors.Timeout)
    assert 1.0 <= time.monotonic() - started < 5
    job_id = info.value.job_id
    assert job_id  # the job is named so the caller can find it
    # Off by default: the remote job keeps running.
    assert local.job_state(job_id)["status"] == "IN_PROGRESS"
    handlers.gate(gate).set()


def test_cancel_on_timeout_cancels_the_remote_job(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    job = ep.run({"sleep": 30})
    with pytest.raises(errors.Timeout) as info:
        job.output(timeout=1.0, cancel_on_timeout=True)
    assert "cancelled" in str(info.value)
    assert local.job_state(job.job_id)["status"] == "CANCELLED"

    with pytest.raises(errors.Timeout) as info:
        ep.run_sync({"sleep": 30}, timeout=1.0, cancel_on_timeout=True)
    assert local.job_state(info.value.job_id)["status"] == "CANCELLED"


def test_short_run_sync_timeout_under_a_second(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    with pytest.raises(errors.Timeout):
        ep.run_sync({"sleep": 30}, timeout=0.3, cancel_on_timeout=True)
    assert ep.run_sync({}, timeout=0.9) == {"echo": {}}


@pytest.mark.parametrize(
    ("payload", "error", "status"),
    [
        ({"fail": "boom"}, errors.JobFailed, "FAILED"),
        ({"error": "bad input"}, errors.JobFailed, "FAILED"),
    ],
)
def test_failed_jobs_raise_with_the_error_text(local_endpoint, client, payload, error, status):
    local = local_endpoint(handlers.work)
    ep = client(local)
    job = ep.run(payload)
    with pytest.raises(error) as info:
        job.output()
    err = info.value
    assert err.job_id == job.job_id
    assert err.endpoint_id == local.endpoint_id
    assert err.status == status
    text = payload.get("fail") or payload.get("error")
    assert text in err.error and text in str(err)
    assert job.status() == "FAILED"
    with pytest.raises(error):
        ep.run_sync(payload, timeout=10)


def test_execution_timeout_policy_ends_timed_out(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    job = ep.run({"sleep": 30}, policy={"executionTimeout": 300})
    with pytest.raises(errors.JobTimedOut) as info:
        job.output(timeout=10)
    assert info.value.status == "TIMED_OUT" and info.value.job_id == job.job_id
    assert local.job_state(job.job_id)["executionTimeoutMs"] == 300
    with pytest.raises(errors.JobTimedOut):
        ep.run_sync({"sleep": 30}, timeout=10, policy={"executionTimeout": 300})


def test_ttl_policy_makes_the_job_404(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    job = ep.run({"sleep": 30}, policy={"ttl": 400})
    assert local.job_state(job.job_id)["ttlMs"] == 400
    with pytest.raises(errors.NotFound) as info:
        job.output(timeout=10)
    assert info.value.status_code == 404 and info.value.job_id == job.job_id


def test_cancel_a_running_job(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    job = ep.run({"sleep": 30})
    wait_until(lambda: job.fetch()["status"] == "IN_PROGRESS")
    assert job.cancel() == {"id": job.job_id, "status": "CANCELLED"}
    with pytest.raises(errors.JobCancelled) as info:
        job.output()
    assert info.value.status == "CANCELLED"
    assert local.job_state(job.job_id)["stopped"] is True
    # A fresh look at the same job agrees.
    with pytest.raises(errors.JobCancelled):
        ep.job(job.job_id).output()


def test_cancel_a_queued_job(local_endpoint, client):
    local = local_endpoint(handlers.work, workers=1)
    ep = client(local)
    gate = f"g-{uuid.uuid4()}"
    blocker = ep.run({"gate": gate})
    queued = ep.run({"x": 1})
    wait_until(lambda: blocker.fetch()["status"] == "IN_PROGRESS")
    assert queued.status() == "IN_QUEUE"
    assert queued.cancel()["status"] == "CANCELLED"
    handlers.gate(gate).set()
    assert blocker.output(timeout=10) == {"echo": {"gate": gate}}
    with pytest.raises(errors.JobCancelled):
        ep.job(queued.job_id).output(timeout=10)
    assert local.job_state(queued.job_id)["attempts"] == 0  # never ran


def test_purge_removes_queued_jobs_only(local_endpoint, client):
    local = local_endpoint(handlers.work, workers=1)
    ep = client(local)
    gate = f"g-{uuid.uuid4()}"
    running = ep.run({"gate": gate})
    queued = [ep.run({"i": i}) for i in range(3)]
    wait_until(lambda: running.fetch()["status"] == "IN_PROGRESS")
    assert ep.purge_queue() == {"removed": 3, "status": "completed"}
    for job in queued:
        with pytest.raises(errors.NotFound):
            job.status()
    handlers.gate(gate).set()
    assert running.output(timeout=10) == {"echo": {"gate": gate}}


def test_retry_requeues_a_failed_job(local_endpoint, client):
    local = local_endpoint(handlers.flaky)
    ep = client(local)
    job = ep.run({})
    with pytest.raises(errors.JobFailed):
        job.output(timeout=10)
    assert job.retry() == {"id": job.job_id, "status": "IN_QUEUE"}
    assert job.output(timeout=10) == {"attempt": 2}
    with pytest.raises(errors.BadRequest) as info:
        job.retry()  # a COMPLETED job cannot be retried
    assert info.value.status_code == 400


def test_health_has_the_documented_keys(local_endpoint, client):
    local = local_endpoint(handlers.work, workers=3)
    ep = client(local)
    ep.run_sync({}, timeout=10)
    health = ep.health()
    assert {"completed", "failed", "inProgress", "inQueue", "retried"} <= set(health["jobs"])
    assert {"idle", "running"} <= set(health["workers"])
    assert health["jobs"]["completed"] == 1


def test_fetch_returns_the_raw_body_and_job_for_known_id(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    job_id = ep.run({"k": "v"}).job_id
    again = ep.job(job_id)
    body = again.fetch(wait=5)
    assert body["id"] == job_id and body["status"] == "COMPLETED"
    assert body["output"] == {"echo": {"k": "v"}}
    assert "executionTime" in body and "delayTime" in body
    assert local.stats()["status-sync"] == 1


def test_unknown_job_and_unknown_endpoint_are_not_found(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    for call in (lambda: ep.job("nope").status(), lambda: ep.job("nope").output(timeout=5),
                 lambda: ep.job("nope").cancel()):
        with pytest.raises(errors.NotFound) as info:
            call()
        assert info.value.job_id == "nope"
    # A 404 for an unknown job on /status-sync must not disable the long poll.
    assert ep.long_poll is not False
    other = client(local, endpoint_id="missing")
    with pytest.raises(errors.NotFound):
        other.health()


@pytest.mark.parametrize(
    ("given", "handler_sees", "extra"),
    [
        ({}, {}, {}),
        ({"input": {}}, {}, {}),  # the SDK double-wraps this one
        ({"input": {"a": 1}, "policy": {"ttl": 60000}}, {"a": 1}, {"ttlMs": 60000}),
        ({"input": 1, "other": 2}, {"input": 1, "other": 2}, {}),
        ([1, 2], [1, 2], {}),
    ],
)
def test_input_or_request_body_form(local_endpoint, client, given, handler_sees, extra):
    local = local_endpoint(handlers.wrap)
    ep = client(local)
    job = ep.run(given)
    assert job.output(timeout=10) == {"got": handler_sees}
    state = local.job_state(job.job_id)
    assert state["input"] == handler_sees
    for key, value in extra.items():
        assert state[key] == value


def test_idempotency_key_returns_the_same_job(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    first = ep.run({"n": 1}, idempotency_key="task-123")
    second = ep.run({"n": 1}, idempotency_key="task-123")
    assert first.job_id == second.job_id
    assert local.submissions() == 1
    # Without a key every call is a new job, each with its own generated key.
    a, b = ep.run({"n": 2}), ep.run({"n": 2})
    assert a.job_id != b.job_id
    keys = {local.job_state(j.job_id)["idempotencyKey"] for j in (a, b)}
    assert len(keys) == 2 and None not in keys
    assert local.job_state(first.job_id)["idempotencyKey"] == "task-123"


def test_progress_shows_in_fetch_but_output_waits_for_the_result(local_endpoint, client):
    local = local_endpoint(handlers.progress)
    ep = client(local)
    gate = f"g-{uuid.uuid4()}"
    job = ep.run({"gate": gate})
    body = wait_until(lambda: (b := job.fetch()).get("output") and b)
    assert body["status"] == "IN_PROGRESS" and body["output"] == {"step": 1}
    handlers.gate(gate).set()
    assert job.output(timeout=10) == {"final": True}
