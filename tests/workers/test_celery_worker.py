"""A ``bridge.run`` Celery task whose job runs in a real runpod worker process: Celery
(embedded threads worker, real redis-server) → gateway → local endpoint → runpod worker,
and back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery, chain
from celery.contrib.testing.worker import start_worker

from bridge import errors, keys
from bridge.embedded_redis import EmbeddedRedis
from bridge.gateway.core import reset_gateway
from bridge.testing import LocalEndpoint
from bridge.worker import install

from .conftest import holder, job_field, wait_until


@pytest.fixture(scope="module")
def celery_app(redis_server: EmbeddedRedis, sync_worker: LocalEndpoint) -> Iterator[Celery]:
    url = f"redis://127.0.0.1:{redis_server.port}/6"
    redis.Redis.from_url(url).flushdb()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRIDGE_REDIS_URL", url)
        mp.setenv("RUNPOD_ENDPOINT_BASE_URL", sync_worker.base_url)
        mp.setenv("BRIDGE_LONG_POLL", "5")
        reset_gateway()
        app = Celery("bridge-workers-tests", broker=url, backend=url)
        app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                        worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
        install(app)

        @app.task(name="tests.workers.pid")
        def pid_of(output: dict) -> int:  # type: ignore[type-arg]
            return int(output["pid"])

        with start_worker(app, pool="threads", concurrency=8, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=15):
            yield app
        reset_gateway()


def test_bridge_run_task_gets_the_real_workers_output(celery_app: Celery, idle_sync_worker: LocalEndpoint) -> None:
    result = celery_app.send_task("bridge.run", args=({"op": "echo", "via": "celery"}, "sync"))
    out = result.get(timeout=30)
    assert out["echo"] == {"op": "echo", "via": "celery"}
    flow = chain(celery_app.signature("bridge.run", args=({"op": "echo"}, "sync")),
                 celery_app.signature("tests.workers.pid"))
    assert flow.apply_async().get(timeout=30) > 0


def test_bridge_run_task_raises_the_workers_failure(celery_app: Celery, idle_sync_worker: LocalEndpoint) -> None:
    result = celery_app.send_task("bridge.run", args=({"op": "raise", "message": "from the worker"}, "sync"))
    with pytest.raises(errors.JobFailed) as info:
        result.get(timeout=30)
    assert json.loads(info.value.error)["error_message"] == "from the worker"


def test_revoking_the_task_cancels_the_job_on_the_worker(celery_app: Celery, idle_sync_worker: LocalEndpoint,
                                                         tmp_path: Path) -> None:
    release = tmp_path / "release"
    result = celery_app.send_task("bridge.run", args=({"op": "progress", "release": str(release)}, "sync"))
    with redis.Redis.from_url(celery_app.conf.broker_url) as journal:
        job_id = wait_until(lambda: (journal.hget(keys.journal(result.id), "job_id") or b"").decode(), timeout=20)
    wait_until(lambda: holder(idle_sync_worker, job_id), timeout=20)
    result.revoke()
    wait_until(lambda: job_field(idle_sync_worker, job_id) == "CANCELLED", timeout=20)
    release.touch()  # the sync handler runs to its end; its late result is dropped
    wait_until(lambda: result.state == "REVOKED", timeout=20)
