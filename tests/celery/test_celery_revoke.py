"""Revocation is cancellation, in every state, on the threads pool (embedded worker) and on
prefork (worker subprocess): the remote job ends CANCELLED on the local endpoint, the
task ends REVOKED, and a task revoked before it ran never submits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery_helpers import Stack, WorkerProcess, wait_until

import bridge
from bridge import errors


def _long(app, seconds: float = 30, **options):  # type: ignore[no-untyped-def]
    return app.send_task("bridge.run", args=({"seconds": seconds}, "sleep"), **options)


@pytest.mark.parametrize("terminate", [False, True], ids=["plain", "terminate"])
def test_revoke_while_waiting_cancels_the_remote_job_within_2s(stack: Stack, terminate: bool) -> None:
    result = _long(stack.app)
    job_id = stack.job_id(result.id)
    assert stack.remote_status(job_id) in ("IN_QUEUE", "IN_PROGRESS")
    # on threads, terminate is not implemented by Celery: bridge's cancel key still works
    result.revoke(terminate=terminate)
    wait_until(lambda: stack.remote_status(job_id) == "CANCELLED", 2.0)
    wait_until(lambda: result.state == "REVOKED", 2.0)
    assert stack.journal(result.id)["state"] == "REVOKED"


def _park(stack: Stack, queue: str):  # type: ignore[no-untyped-def]
    """A bridge.run message sitting in a queue no worker consumes yet."""
    return stack.app.send_task("bridge.run", args=({"seconds": 30}, "sleep"), queue=queue)


def _consume(stack: Stack, queue: str) -> None:
    replies = stack.app.control.add_consumer(queue, reply=True, timeout=2.0)
    assert replies, "the embedded worker did not answer add_consumer"


def test_revoked_while_queued_never_submits(stack: Stack) -> None:
    before = stack.endpoint.submissions("sleep")
    result = _park(stack, "parked-a")
    result.revoke()
    _consume(stack, "parked-a")
    wait_until(lambda: result.state == "REVOKED", 5.0)
    assert stack.journal(result.id) == {}
    assert stack.endpoint.submissions("sleep") == before


def test_a_revoke_this_worker_never_heard_is_read_from_the_backend(stack: Stack) -> None:
    """The lost broadcast: another worker stored REVOKED while this one was away."""
    before = stack.endpoint.submissions("sleep")
    result = _park(stack, "parked-b")
    stack.app.backend.mark_as_revoked(result.id, "revoked")
    _consume(stack, "parked-b")
    wait_until(lambda: stack.journal(result.id).get("claim") is None
               and stack.redis.exists(f"bridge:cancel:{result.id}"), 5.0)
    assert result.state == "REVOKED"
    assert stack.endpoint.submissions("sleep") == before


def test_cancel_task_works_without_any_broadcast(stack: Stack) -> None:
    before = stack.endpoint.submissions("sleep")
    queued = _park(stack, "parked-c")
    bridge.cancel_task(queued.id)  # no revoke at all: only bridge's key
    _consume(stack, "parked-c")
    wait_until(lambda: queued.state == "REVOKED", 5.0)
    assert stack.endpoint.submissions("sleep") == before
    running = _long(stack.app)
    job_id = stack.job_id(running.id)
    bridge.cancel_task(running.id)
    wait_until(lambda: stack.remote_status(job_id) == "CANCELLED", 2.0)
    wait_until(lambda: running.state == "REVOKED", 2.0)


def test_a_revoked_batch_item_cancels_its_remote_job(stack: Stack) -> None:
    # (before the prefork test: its sub_stack re-points the gateway at another Redis db)
    # bridge.batch_item waits on a remote job like bridge.run: the worker step mirrors its
    # revoke into the cancel key (and keeps its held message from the visibility timeout)
    result = stack.app.send_task(
        "bridge.batch_item", args=({"seconds": 30}, "sleep", "revokedbatch", 0), task_id="bb-revokedbatch-0-0"
    )
    job_id = stack.job_id(result.id)
    assert stack.remote_status(job_id) in ("IN_QUEUE", "IN_PROGRESS")
    result.revoke()
    wait_until(lambda: stack.remote_status(job_id) == "CANCELLED", 2.0)


@pytest.mark.slow
def test_prefork_plain_revoke_terminate_and_time_limit(
    sub_stack: Stack, workers: Callable[..., WorkerProcess]
) -> None:
    """Prefork children cannot see the revoked set: the worker step mirrors revokes into
    cancel keys; terminate kills the child and the main process cancels the job; a soft
    time limit becomes bridge's own deadline (cancel, then Timeout)."""
    workers(pool="prefork", concurrency=3)
    app = sub_stack.app
    plain, killed = _long(app), _long(app)
    limited = _long(app, soft_time_limit=2.0, time_limit=4.0)
    jobs = {r.id: sub_stack.job_id(r.id, 15) for r in (plain, killed, limited)}
    plain.revoke()
    killed.revoke(terminate=True)
    for r in (plain, killed):
        wait_until(lambda r=r: sub_stack.remote_status(jobs[r.id]) == "CANCELLED", 2.5)
        wait_until(lambda r=r: r.state == "REVOKED", 5.0)
    with pytest.raises(errors.Timeout) as info:
        limited.get(timeout=15)
    assert info.value.job_id == jobs[limited.id]
    wait_until(lambda: sub_stack.remote_status(jobs[limited.id]) == "CANCELLED", 2.0)

