"""Crash safety with worker subprocesses: kill -9 mid-job then a restart delivers every
result with exactly one remote submission per task; a warm shutdown hands waiting tasks to
the next worker without cancelling their remote jobs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from celery_helpers import FAST_TAKEOVER, Stack, WorkerProcess, kill_during_submission, wait_until


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_kill_9_mid_job_then_restart_submits_once_and_delivers(
    sub_stack: Stack, workers: Callable[..., WorkerProcess], pool: str
) -> None:
    ep, app = sub_stack.endpoint, sub_stack.app
    before = ep.submissions("sleep")
    first = workers(pool=pool, concurrency=4, **FAST_TAKEOVER)
    results = [app.send_task("bridge.run", args=({"seconds": 4, "i": i}, "sleep")) for i in range(4)]
    jobs = {r.id: sub_stack.job_id(r.id, 15) for r in results}
    # the whole worker (main process and children) dies without any cleanup
    os.killpg(os.getpgid(first.proc.pid), signal.SIGKILL) if pool == "prefork" else first.kill9()
    first.proc.wait(10)
    killed_at = time.monotonic()
    workers(pool=pool, concurrency=4, **FAST_TAKEOVER)
    for r in results:
        assert r.get(timeout=40) == {"slept": 4.0}
    assert time.monotonic() - killed_at < 30
    assert ep.submissions("sleep") - before == len(results)  # exactly one per task
    for task_id, job_id in jobs.items():
        assert sub_stack.journal(task_id)["job_id"] == job_id
        assert sub_stack.remote_status(job_id) == "COMPLETED"


@pytest.mark.slow
def test_a_live_workers_messages_are_not_redelivered_by_the_visibility_timeout(
    sub_stack: Stack, workers: Callable[..., WorkerProcess]
) -> None:
    """Jobs longer than the visibility timeout: the worker step's heartbeat keeps them."""
    ep, app = sub_stack.endpoint, sub_stack.app
    workers(pool="threads", concurrency=4, **FAST_TAKEOVER)
    workers(pool="threads", concurrency=4, **FAST_TAKEOVER)
    before, polls_before = ep.submissions("sleep"), ep.stats("sleep").get("status-sync", 0)
    result = app.send_task("bridge.run", args=({"seconds": 9}, "sleep"))
    assert result.get(timeout=30) == {"slept": 9.0}
    assert ep.submissions("sleep") - before == 1
    # one waiter (long polls of 5 s): a second delivery would have doubled the polls
    assert ep.stats("sleep").get("status-sync", 0) - polls_before <= 3


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_warm_shutdown_hands_jobs_to_the_next_worker_without_cancelling(
    sub_stack: Stack, workers: Callable[..., WorkerProcess], pool: str
) -> None:
    ep, app = sub_stack.endpoint, sub_stack.app
    before = ep.submissions("sleep")
    first = workers(pool=pool, concurrency=2)
    result = app.send_task("bridge.run", args=({"seconds": 6}, "sleep"))
    job_id = sub_stack.job_id(result.id, 15)
    stopped_at = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)  # a deploy: warm shutdown
    first.proc.wait(15)
    assert time.monotonic() - stopped_at < 5, first.output()  # did not wait for the 6 s job
    assert sub_stack.remote_status(job_id) in ("IN_QUEUE", "IN_PROGRESS")  # not cancelled
    workers(pool=pool, concurrency=2)
    assert result.get(timeout=30) == {"slept": 6.0}
    assert ep.submissions("sleep") - before == 1
    wait_until(lambda: sub_stack.journal(result.id).get("state") == "COMPLETED", 5)


@pytest.mark.slow
def test_kill_9_during_submission_five_times_with_a_second_worker(
    sub_stack: Stack, workers: Callable[..., WorkerProcess]
) -> None:
    """Redis broker: every task whose message reached a worker ends with its result; kombu's
    Redis transport may lose a message popped in the instant before the kill (counted, not
    asserted away); no job is created twice (the local endpoint honours Idempotency-Key)."""
    report = kill_during_submission(sub_stack, workers)
    print(f"\nkill -9 during submission x5 (Redis broker): {report}")
    assert report.unfinished_with_job == []
    assert report.results + len(report.lost) == report.tasks
    assert report.jobs_created == report.results  # one remote job per delivered task
