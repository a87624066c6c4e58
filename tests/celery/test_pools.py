"""The job tasks' guarantees on every supported pool: prefork (Celery's default), threads, and
solo (a smoke), each an existing app's ``celery worker`` subprocess with ``bridge.install``.
Held jobs complete through Celery's own execution, so results, chains, groups and chords,
typed failures, revocation in every state, ``expires`` and ``timeout=`` behave as for a
normal task, with the remote job cancelled where the task is.

Also: the cap on held jobs (past it the app's tasks still flow), gevent's blocking path
with its one warning, a worker without ``bridge.install`` and ``.apply()``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import chain, chord, group, signature
from celery_helpers import API_KEY, GATEWAY_ENV, Stack, WorkerProcess, wait_until

from bridge import errors
from bridge.gateway.core import reset_gateway

POOLS = {"prefork": 2, "threads": 4}


@pytest.fixture(scope="module", params=sorted(POOLS))
def pool_worker(request: pytest.FixtureRequest, sub_stack: Stack) -> Iterator[WorkerProcess]:
    """One existing-app worker per pool for the module's scenarios."""
    pool = request.param
    w = WorkerProcess(sub_stack.app, sub_stack.url, sub_stack.endpoint.base_url, pool, POOLS[pool],
                      "existing_app")
    try:
        yield w.wait_ready()
    finally:
        w.stop()


def _run(stack: Stack, input: Any, endpoint: str = "echo", **kwargs: Any) -> Any:
    return signature("bridge.run", args=(input, endpoint), kwargs=kwargs, app=stack.app)


def test_results_chain_group_and_chord(sub_stack: Stack, pool_worker: WorkerProcess) -> None:
    app = sub_stack.app
    assert _run(sub_stack, {"n": 7}).apply_async().get(timeout=30) == {"n": 7}
    ch = chain(signature("existing.prep", args=(3,), app=app), signature("bridge.run", args=("echo",), app=app),
               signature("existing.record", app=app))
    sub_stack.redis.delete("existing:record:3")
    assert ch.apply_async().get(timeout=30) == 1
    assert group(_run(sub_stack, {"n": i}) for i in range(6)).apply_async().get(timeout=30) == [
        {"n": i} for i in range(6)]
    sub_stack.redis.delete("existing:total-calls")
    body = signature("existing.total", app=app)
    assert chord([_run(sub_stack, {"n": i}) for i in range(1, 5)], body).apply_async().get(timeout=30) == 10
    assert int(sub_stack.redis.get("existing:total-calls") or 0) == 1


def test_a_failed_job_fails_the_task_with_its_typed_error(sub_stack: Stack, pool_worker: WorkerProcess) -> None:
    result = _run(sub_stack, {"message": "boom"}, "fail").apply_async()
    with pytest.raises(errors.JobFailed) as info:
        result.get(timeout=30)
    assert info.value.job_id and "boom" in str(info.value)
    assert result.state == "FAILURE"


@pytest.mark.parametrize("terminate", [False, True], ids=["plain", "terminate"])
def test_revoke_while_held_cancels_the_remote_job(sub_stack: Stack, pool_worker: WorkerProcess,
                                                  terminate: bool) -> None:
    result = _run(sub_stack, {"seconds": 30}, "sleep").apply_async()
    job_id = sub_stack.job_id(result.id, 15)
    result.revoke(terminate=terminate)
    wait_until(lambda: sub_stack.remote_status(job_id) == "CANCELLED", 5.0)
    wait_until(lambda: result.state == "REVOKED", 5.0)
    assert sub_stack.journal(result.id)["state"] == "REVOKED"
    assert pool_worker.proc.poll() is None  # terminate never signals the worker itself


def test_expires_and_timeout_while_held_cancel_the_remote_job(sub_stack: Stack, pool_worker: WorkerProcess) -> None:
    expiring = _run(sub_stack, {"seconds": 30}, "sleep").apply_async(expires=3)
    timed = _run(sub_stack, {"seconds": 30}, "sleep", timeout=2).apply_async()
    jobs = {r.id: sub_stack.job_id(r.id, 15) for r in (expiring, timed)}
    wait_until(lambda: expiring.state == "REVOKED", 15.0)
    with pytest.raises(errors.Timeout):
        timed.get(timeout=15)
    for r in (expiring, timed):
        wait_until(lambda r=r: sub_stack.remote_status(jobs[r.id]) == "CANCELLED", 5.0)


def test_stream_chunks_arrive_while_held(sub_stack: Stack, pool_worker: WorkerProcess) -> None:
    import bridge

    result = signature("bridge.stream", args=({"text": "a b c d"}, "stream"), app=sub_stack.app).apply_async()
    chunks = result.get(timeout=30)
    assert len(chunks) == 4
    events = list(bridge.read_stream(result.id, redis_url=sub_stack.url, timeout=5))
    assert [e.chunk for e in events if not e.eof] == chunks
    assert events[-1].eof and events[-1].status == "COMPLETED"


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
