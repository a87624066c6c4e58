"""The bridge.* tasks through a real embedded threads worker, real Redis and a real local
endpoint: results, composition (chain, group, chord), streams, the one-look tasks, failures
and deadlines."""

from __future__ import annotations

import json

import pytest
from celery import chain, chord, group
from celery_helpers import Stack, wait_until

from bridge import errors, keys


def run_sig(app, *args, **kwargs):  # type: ignore[no-untyped-def]
    return app.signature("bridge.run", args=args, kwargs=kwargs)


def test_run_returns_the_output_and_records_the_job(stack: Stack) -> None:
    result = stack.app.send_task("bridge.run", args=({"n": 1, "seconds": 0.1}, "echo"))
    assert result.get(timeout=20) == {"n": 1, "seconds": 0.1}
    entry = stack.journal(result.id)
    assert entry["state"] == "COMPLETED" and entry["endpoint_id"] == "echo"
    assert stack.remote_status(entry["job_id"]) == "COMPLETED"


def test_chain_passes_the_previous_result_as_input(stack: Stack) -> None:
    app = stack.app
    flow = chain(app.signature("tests.prep", args=(4,)), run_sig(app, "echo"), app.signature("tests.post"))
    assert flow.apply_async().get(timeout=20) == 40


def test_group_and_chord_fan_out(stack: Stack) -> None:
    before = stack.endpoint.submissions("echo")
    g = group(run_sig(stack.app, {"n": i}, "echo") for i in range(20)).apply_async()
    assert [o["n"] for o in g.get(timeout=30)] == list(range(20))
    c = chord((run_sig(stack.app, {"n": i}, "echo") for i in range(10)), stack.app.signature("tests.total"))
    assert c.apply_async().get(timeout=30) == sum(range(10))
    assert stack.endpoint.submissions("echo") - before == 30


def test_stream_publishes_chunks_to_a_redis_stream_and_returns_them(stack: Stack) -> None:
    text = "one two three four five"
    result = stack.app.send_task("bridge.stream", args=({"text": text, "delay": 0.02}, "stream"))
    assert result.get(timeout=20) == text.split()
    entries = stack.redis.xrange(keys.stream(result.id))
    chunks = [json.loads(f[b"chunk"]) for _, f in entries if b"chunk" in f]
    assert chunks == text.split()
    last = entries[-1][1]
    assert last[b"eof"] == b"1" and last[b"status"] == b"COMPLETED"


def test_run_sync_status_cancel_health_purge_tasks(stack: Stack) -> None:
    app = stack.app
    assert app.send_task("bridge.run_sync", args=({"x": 1}, "echo")).get(timeout=20) == {"x": 1}
    running = app.send_task("bridge.run", args=({"seconds": 30}, "sleep"))
    job_id = stack.job_id(running.id)
    look = app.send_task("bridge.status", args=(job_id, "sleep")).get(timeout=20)
    assert look["id"] == job_id and look["status"] in ("IN_QUEUE", "IN_PROGRESS")
    health = app.send_task("bridge.health", args=("sleep",)).get(timeout=20)
    assert "jobs" in health and "workers" in health
    assert "removed" in app.send_task("bridge.purge_queue", args=("sleep",)).get(timeout=20)
    cancelled = app.send_task("bridge.cancel", args=(job_id, "sleep")).get(timeout=20)
    assert cancelled["status"] == "CANCELLED"
    # the waiting bridge.run sees its job CANCELLED by someone else: a typed failure
    with pytest.raises(errors.JobCancelled) as info:
        running.get(timeout=20)
    assert info.value.job_id == job_id


def test_failed_job_fails_the_task_with_a_typed_error_that_survives_the_backend(stack: Stack) -> None:
    result = stack.app.send_task("bridge.run", args=({"message": "boom"}, "fail"))
    with pytest.raises(errors.JobFailed) as info:
        result.get(timeout=20)
    assert info.value.job_id and info.value.endpoint_id == "fail"
    assert "boom" in str(info.value)
    assert stack.journal(result.id)["job_id"] == info.value.job_id
    assert stack.journal(result.id)["state"] == "FAILED"


def test_timeout_cancels_the_remote_job_and_fails_with_timeout(stack: Stack) -> None:
    result = stack.app.send_task("bridge.run", args=({"seconds": 30}, "sleep"), kwargs={"timeout": 1.0})
    with pytest.raises(errors.Timeout) as info:
        result.get(timeout=20)
    assert info.value.job_id
    wait_until(lambda: stack.remote_status(info.value.job_id) == "CANCELLED", 5)


def test_expires_while_waiting_cancels_the_remote_job_and_ends_revoked(stack: Stack) -> None:
    result = stack.app.send_task("bridge.run", args=({"seconds": 30}, "sleep"), expires=2.0)
    job_id = stack.job_id(result.id)
    wait_until(lambda: result.state == "REVOKED", 10)
    wait_until(lambda: stack.remote_status(job_id) == "CANCELLED", 5)


def test_second_delivery_while_the_first_waits_submits_nothing_and_ends_the_same(stack: Stack) -> None:
    before = stack.endpoint.submissions("sleep")
    first = stack.app.send_task("bridge.run", args=({"seconds": 1.5}, "sleep"))
    stack.job_id(first.id)
    # the same message again (what a visibility-timeout redelivery looks like)
    second = stack.app.send_task("bridge.run", args=({"seconds": 1.5}, "sleep"), task_id=first.id)
    assert second.get(timeout=20) == {"slept": 1.5}
    assert first.get(timeout=20) == {"slept": 1.5}
    assert stack.endpoint.submissions("sleep") - before == 1


def test_a_revoked_stream_ends_its_redis_stream(stack: Stack) -> None:
    result = stack.app.send_task("bridge.stream", args=({"text": "a b c " * 200, "delay": 0.05}, "stream"))
    wait_until(lambda: stack.redis.xlen(keys.stream(result.id)) >= 2)
    result.revoke()
    wait_until(lambda: result.state == "REVOKED", 5)
    last = stack.redis.xrevrange(keys.stream(result.id), count=1)[0][1]
    assert last[b"eof"] == b"1" and last[b"status"] == b"CANCELLED"
    assert stack.remote_status(stack.journal(result.id)["job_id"]) == "CANCELLED"
