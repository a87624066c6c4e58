"""``bridge.batch(..., app=app)`` through a real (embedded, threads) Celery worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

import bridge
import bridge.batch.celery  # noqa: F401  (registers bridge.batch_item)
from bridge.batch import batch
from bridge.gateway.core import reset_gateway

from .conftest import FAULTS, flaky_handler, is_failing, slow_handler, wait_until


@pytest.fixture
def celery_stack(redis_url: str, local_endpoint, monkeypatch) -> Iterator[tuple[Celery, object]]:
    ep = local_endpoint(flaky_handler, endpoint_id="ep", faults=FAULTS, workers=200)
    ep.add_endpoint("slow", slow_handler, workers=200)
    for key, value in {
        "BRIDGE_REDIS_URL": redis_url, "RUNPOD_ENDPOINT_BASE_URL": ep.base_url,
        "BRIDGE_LONG_POLL": "5", "BRIDGE_SUBMIT_ATTEMPTS": "30",
    }.items():
        monkeypatch.setenv(key, value)
    reset_gateway()
    app = Celery("bridge-batch-tests", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1,
                    broker_connection_retry_on_startup=True)
    bridge.install(app)
    with start_worker(app, pool="threads", concurrency=100, perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=15):
        yield app, ep
    reset_gateway()


@pytest.mark.slow
def test_2000_inputs_through_celery_with_faults(celery_stack, redis_url):
    app, ep = celery_stack
    n = 2000
    handle = batch([{"x": i} for i in range(n)], "ep", app=app, concurrency=150, batch_id="c2000")
    seen = {r.index for r in handle.as_completed(timeout=150)}
    assert seen == set(range(n))
    results = handle.results(timeout=10)
    assert [r.index for r in results] == list(range(n))
    for r in results:
        if is_failing(r.index):
            assert r.status == "FAILED" and "is bad" in str(r.error), r
        else:
            assert r.status == "COMPLETED" and r.output == {"y": 2 * r.index}, r
    assert [f.index for f in handle.failures()] == [i for i in range(n) if is_failing(i)]
    assert ep.submissions() == n  # every item created exactly one remote job
    # Results live per job in Redis with a counter; nothing went through the result backend.
    r = redis.Redis.from_url(redis_url)
    assert int(r.get("bridge:batch:c2000:done")) == n
    assert not list(r.scan_iter("celery-task-meta-bb-c2000-*", count=1000))
    p = handle.progress()
    assert (p.done, p.failed, p.in_flight) == (n - n // 20, n // 20, 0)


def test_cancel_through_celery_cancels_every_remote_job(celery_stack, redis_url):
    app, ep = celery_stack
    handle = batch([{"x": i} for i in range(40)], "slow", app=app, concurrency=15, batch_id="cslow")
    wait_until(lambda: ep.health("slow")["jobs"]["inProgress"] == 15, 30, "15 jobs running")
    handle.cancel(timeout=30)
    results = handle.results(timeout=5)
    cancelled = [r for r in results if r.status == "CANCELLED"]
    assert len(cancelled) == 15
    assert all(r.status == "PENDING" for r in results if r.status != "CANCELLED")
    assert ep.submissions("slow") == 15
    for r in cancelled:
        assert r.job_id and ep.job_state(r.job_id)["status"] == "CANCELLED"
