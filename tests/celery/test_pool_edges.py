"""Worker setups that each need the test queue to themselves: solo (a smoke: held jobs never
block the consumer's own thread), the cap on held jobs (past it the app's tasks still
flow), gevent's blocking path with its one warning, a worker without ``bridge.install``,
and ``.apply()`` in the calling thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from celery import signature
from celery_helpers import API_KEY, GATEWAY_ENV, Stack, WorkerProcess, wait_until

from bridge.gateway.core import reset_gateway


def _run(stack: Stack, input: Any, endpoint: str = "echo", **kwargs: Any) -> Any:
    return signature("bridge.run", args=(input, endpoint), kwargs=kwargs, app=stack.app)


def test_solo_pool_smoke(sub_stack: Stack, workers: Callable[..., WorkerProcess]) -> None:
    """Solo runs tasks in the consumer's own thread: held jobs still never block it, so
    a revoke is handled while jobs are held."""
    workers(pool="solo", concurrency=1, app_module="existing_app")
    results = [_run(sub_stack, {"seconds": 2, "i": i}, "sleep").apply_async() for i in range(5)]
    slow = _run(sub_stack, {"seconds": 30}, "sleep").apply_async()
    job_id = sub_stack.job_id(slow.id, 15)
    assert sub_stack.app.send_task("existing.add", args=(1, 2)).get(timeout=10) == 3
    slow.revoke()
    wait_until(lambda: sub_stack.remote_status(job_id) == "CANCELLED", 5.0)
    assert [r.get(timeout=30) for r in results] == [{"slept": 2.0}] * 5


class Gauge:
    """An async handler that records how many of its jobs ran at once."""

    def __init__(self) -> None:
        self.active = self.peak = self.done = 0

    async def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(float(job["input"]["seconds"]))
        finally:
            self.active -= 1
            self.done += 1
        return {"i": job["input"]["i"]}


def test_past_the_cap_job_messages_wait_and_the_apps_tasks_flow(
    sub_stack: Stack, workers: Callable[..., WorkerProcess]
) -> None:
    gauge = Gauge()
    sub_stack.endpoint.add_endpoint("gauge", gauge, workers=50)
    worker = workers(pool="prefork", concurrency=2, app_module="existing_app", BRIDGE_MAX_HELD_JOBS="3")
    results = [_run(sub_stack, {"seconds": 1.5, "i": i}, "gauge").apply_async() for i in range(9)]
    wait_until(lambda: gauge.active == 3, 15)
    # the parked job messages are received (inspect reserved lists them), not started
    reserved = sub_stack.app.control.inspect([worker.name], timeout=5).reserved() or {}
    assert any(t["name"] == "bridge.run" for t in reserved.get(worker.name, []))
    assert sub_stack.app.send_task("existing.add", args=(2, 2)).get(timeout=10) == 4
    assert gauge.done < 9
    assert [r.get(timeout=60) for r in results] == [{"i": i} for i in range(9)]
    assert gauge.peak == 3


def test_gevent_keeps_the_blocking_path_and_says_so_once(
    sub_stack: Stack, workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(pool="gevent", concurrency=20, app_module="existing_app")
    results = [_run(sub_stack, {"n": i}).apply_async() for i in range(3)]
    assert [r.get(timeout=30) for r in results] == [{"n": i} for i in range(3)]
    assert worker.output().count("bridge job tasks wait in pool slots here") == 1


def test_without_install_job_tasks_take_the_blocking_path(
    sub_stack: Stack, workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(pool="prefork", concurrency=2, app_module="plain_app")
    result = _run(sub_stack, {"seconds": 3}, "sleep").apply_async()
    sub_stack.job_id(result.id, 15)
    active = sub_stack.app.control.inspect([worker.name], timeout=5).active() or {}
    pids = {t["worker_pid"] for t in active.get(worker.name, []) if t["id"] == result.id}
    assert pids and worker.proc.pid not in pids  # in a pool child: the blocking path
    assert result.get(timeout=30) == {"slept": 3.0}
    assert "bridge job tasks wait in pool slots" not in worker.output()


def test_apply_runs_the_job_in_the_calling_thread(sub_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**GATEWAY_ENV, "RUNPOD_API_KEY": API_KEY,
                       "RUNPOD_ENDPOINT_BASE_URL": sub_stack.endpoint.base_url}.items():
        monkeypatch.setenv(key, value)
    reset_gateway()
    try:
        eager = sub_stack.app.tasks["bridge.run"].apply(args=({"n": 5}, "echo"))
        assert eager.get() == {"n": 5}
        assert sub_stack.journal(eager.id)["state"] == "COMPLETED"
    finally:
        reset_gateway()
