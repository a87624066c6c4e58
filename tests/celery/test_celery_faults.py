"""Bad input and a misbehaving endpoint: each fails the task with a typed error that names
the cause, survives the result backend, keeps a submitted job's id, and leaks no secret.
429/5xx storms while jobs wait are ridden out. The Redis-shared budget holds across
processes."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import redis.asyncio as aioredis
from celery_helpers import API_KEY, WRONG_KEY, GarbageServer, Stack, wait_until

from bridge import errors
from bridge.gateway.budget import Budget
from bridge.gateway.settings import WINDOW_SECONDS


def _fails_with(stack: Stack, exc_type: type[BaseException], input: object, endpoint: str,
                timeout: float = 30):  # type: ignore[no-untyped-def]
    result = stack.app.send_task("bridge.run", args=(input, endpoint))
    with pytest.raises(exc_type) as info:
        result.get(timeout=timeout)
    assert result.state == "FAILURE"
    return result, info.value


def _no_secret_anywhere(stack: Stack, *secrets: str) -> None:
    for key in stack.redis.scan_iter(count=1000):
        kind = stack.redis.type(key)
        if kind == b"string":
            blob = stack.redis.get(key) or b""
        elif kind == b"hash":
            blob = b"".join(k + v for k, v in stack.redis.hgetall(key).items())
        else:
            continue
        for secret in secrets:
            assert secret.encode() not in blob, key


def test_unknown_endpoint_is_not_found(stack: Stack) -> None:
    _, exc = _fails_with(stack, errors.NotFound, {"x": 1}, "no-such-endpoint")
    assert exc.endpoint_id == "no-such-endpoint" and exc.status_code == 404


def test_wrong_api_key_fails_and_never_leaks(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    result, exc = _fails_with(stack, errors.AuthenticationError, {"x": 1}, "badkey")
    assert exc.status_code == 401
    text = str(exc) + repr(exc.args) + str(result.traceback)
    assert WRONG_KEY not in text and API_KEY not in text
    assert WRONG_KEY not in caplog.text and API_KEY not in caplog.text
    _no_secret_anywhere(stack, WRONG_KEY, API_KEY)


def test_oversized_input_is_refused_before_submitting(stack: Stack) -> None:
    before = stack.endpoint.submissions("echo")
    result, exc = _fails_with(stack, errors.PayloadTooLarge, {"blob": "x" * 10_500_000}, "echo")
    assert stack.endpoint.submissions("echo") == before
    assert stack.journal(result.id).get("job_id") is None


def test_non_json_input_is_refused(stack: Stack) -> None:
    _, exc = _fails_with(stack, errors.InvalidRequest, {"x": math.nan}, "echo")
    assert "JSON" in str(exc)


def test_s3_config_in_task_arguments_never_leaves_the_producer(stack: Stack) -> None:
    body = {"input": {"x": 1}, "s3Config": {"accessId": "a", "accessSecret": "s3cr3t-value"}}
    with pytest.raises(errors.InvalidRequest):
        stack.app.tasks["bridge.run"].delay(dict(body), "echo")
    # send_task bypasses the task class: the credentials are stripped before publishing
    result = stack.app.send_task("bridge.run", args=(dict(body), "echo"))
    with pytest.raises(errors.InvalidRequest):
        result.get(timeout=20)
    _no_secret_anywhere(stack, "s3cr3t-value")


def test_endpoint_down_fails_with_transport_error(stack: Stack) -> None:
    _, exc = _fails_with(stack, errors.TransportError, {"x": 1}, "down")
    assert "run" in str(exc)


def test_malformed_response_after_submit_keeps_the_job_id(stack: Stack) -> None:
    result, exc = _fails_with(stack, errors.MalformedResponse, {"x": 1}, "garbage")
    assert exc.job_id == GarbageServer.JOB_ID
    assert stack.journal(result.id)["job_id"] == GarbageServer.JOB_ID


def test_429_and_5xx_storms_while_waiting_then_recovery(stack: Stack) -> None:
    ep = stack.endpoint
    before = ep.stats("sleep")
    ep.set_faults(error_rate={"status": 1.0, "status-sync": 1.0}, error_status=503)
    try:
        results = [stack.app.send_task("bridge.run", args=({"seconds": 0.5, "i": i}, "sleep"))
                   for i in range(20)]
        for r in results:
            stack.job_id(r.id)
        wait_until(lambda: ep.stats("sleep").get("status-sync", 0) - before.get("status-sync", 0) >= 20)
        ep.set_faults(error_rate={}, rate_limits={"status": [10, 1.0], "status-sync": [10, 1.0]})
        wait_until(lambda: sum(r.ready() for r in results) >= 5, 20)
    finally:
        ep.set_faults(error_rate={}, rate_limits={})
    assert [r.get(timeout=30)["slept"] for r in results] == [0.5] * 20
    assert all(r.state == "SUCCESS" for r in results)


async def test_the_rate_budget_is_shared_through_redis(stack: Stack) -> None:
    """Two gateways (two workers) with a 30-per-window status budget: together at most 30."""
    clients = [aioredis.Redis.from_url(stack.url) for _ in range(2)]
    budgets = [Budget(c, {"status": (30, 0)}, "shared-ep") for c in clients]
    granted = 0

    async def take(budget: Budget) -> None:
        nonlocal granted
        async with budget.slot("status"):
            granted += 1

    # Budget windows are wall-clock (time.time() // 10 s, shared by all processes).
    started = time.time()
    tasks = [asyncio.create_task(take(budgets[i % 2])) for i in range(80)]
    await asyncio.wait(tasks, timeout=1.0)
    crossed = int(started // WINDOW_SECONDS) != int(time.time() // WINDOW_SECONDS)
    assert granted <= 30 or crossed  # a window boundary may grant a second 30
    assert granted >= 30 or crossed
    for t in tasks:
        t.cancel()
    for c in clients:
        await c.aclose()
