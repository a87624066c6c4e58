"""The Celery app the Celery benchmark's workers run: ``bridge.app``'s settings plus a no-op
task (the baseline) and the naive task people write today (the SDK's ``run_sync`` inside a
task, holding a worker slot for the whole job)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bridge.worker import install

app = Celery("bench")
app.config_from_object("celeryconfig")  # the repository's, as bridge.app
install(app)


@app.task(name="bench.noop")
def noop(value: Any = None) -> Any:
    return value


@app.task(name="bench.naive")
def naive(input: Any, endpoint_id: str) -> Any:
    import runpod

    runpod.api_key = os.environ.get("RUNPOD_API_KEY") or "bench"
    runpod.endpoint_url_base = os.environ["RUNPOD_ENDPOINT_BASE_URL"]
    return runpod.Endpoint(endpoint_id).run_sync(input, timeout=600)

if os.environ.get("BENCH_SWITCH"):
    import sys

    sys.setswitchinterval(float(os.environ["BENCH_SWITCH"]))


if os.environ.get("BENCH_EXPERIMENTS"):
    @app.task(name="bench.begin_only", bind=True)
    def begin_only(self: Any, value: Any = None) -> Any:
        from bridge.task_state import begin

        begin(self.backend, self.request, self.request.id)
        return value

    @app.task(name="bench.gw_only", bind=True)
    def gw_only(self: Any, value: Any, endpoint_id: str) -> Any:
        from bridge.gateway.core import JobSpec, get_gateway

        return get_gateway().run(JobSpec(self.request.id, endpoint_id, value))
