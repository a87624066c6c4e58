"""``bridge batch --celery``: the CLI as producer, an embedded worker doing the jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from celery import Celery
from celery.contrib.testing.worker import start_worker

import bridge
import bridge.batch.celery  # noqa: F401  (registers bridge.batch_item)
from bridge.gateway.core import reset_gateway

from .conftest import flaky_handler, is_failing

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def test_cli_through_celery_and_rerun_submits_nothing(local_endpoint, input_file, tmp_path, redis_url, monkeypatch):
    ep = local_endpoint(flaky_handler, endpoint_id="ep")
    monkeypatch.setenv("BRIDGE_REDIS_URL", redis_url)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", ep.base_url)
    reset_gateway()
    app = Celery("bridge-cli-celery-tests", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
    bridge.install(app)
    n = 200
    inp, out = input_file(n), tmp_path / "out.jsonl"
    args = [BRIDGE, "batch", str(inp), "-o", str(out), "-e", "ep", "--broker", redis_url, "-c", "50"]
    env = dict(os.environ, CELERY_BROKER_URL=redis_url)
    try:
        with start_worker(app, pool="threads", concurrency=50, perform_ping_check=False, loglevel="WARNING"):
            first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
            again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    finally:
        reset_gateway()
    assert first.returncode == 1, first.stderr  # the deterministic failures
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(n))
    assert all((r["status"] == "FAILED") == is_failing(r["index"]) for r in rows)
    assert all(r["output"] == {"y": 2 * r["index"]} for r in rows if not is_failing(r["index"]))
    assert again.returncode == 1 and ep.submissions() == n  # the re-run found every result in Redis
