"""The job tasks' guarantees on every supported pool: prefork (Celery's default), threads, and
solo (a smoke), each an existing app's ``celery worker`` subprocess with ``bridge.install``.
Held jobs complete through Celery's own execution, so results, chains, groups and chords,
typed failures, revocation in every state, ``expires`` and ``timeout=`` behave as for a
normal task, with the remote job cancelled where the task is.

(The solo smoke, the cap, gevent and a worker without ``bridge.install`` are in
test_pool_edges.py: each needs the queue to itself.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, chord, group, signature
from celery_helpers import Stack, WorkerProcess, wait_until

from bridge import errors

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
