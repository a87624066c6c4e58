"""``bridge batch --celery`` re-run after items were enqueued and never recorded (their
messages lost: a Redis restart without persistence, kombu's BRPOP window, a worker that
acked without recording): the re-run publishes them again under the same task ids and
finishes, instead of waiting forever for results nobody will record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

import bridge
import bridge.batch.celery  # noqa: F401  (registers bridge.batch_item)
from bridge.gateway.core import reset_gateway
from bridge.testing import LocalEndpoint
from bridge.testing.waiting import wait_until

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def double(job: dict[str, Any]) -> dict[str, Any]:
    return {"y": job["input"]["x"] * 2}


def test_a_rerun_publishes_again_what_was_enqueued_and_never_recorded(
        local_endpoint: Callable[..., LocalEndpoint], tmp_path: Path, redis_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ep = local_endpoint(double, endpoint_id="ep")
    monkeypatch.setenv("BRIDGE_REDIS_URL", redis_url)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", ep.base_url)
    n = 20
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(n)))
    args = [BRIDGE, "batch", str(inp), "-o", str(out), "-e", "ep", "--broker", redis_url, "-c", "50"]
    env = dict(os.environ, CELERY_BROKER_URL=redis_url)
    client = redis.Redis.from_url(redis_url)
    # The first run enqueues everything (no worker yet), then dies; its messages are lost.
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: client.llen("celery") == n, 30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    client.delete("celery")
    reset_gateway()
    app = Celery("bridge-rerun-tests", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
    bridge.install(app)
    try:
        with start_worker(app, pool="threads", concurrency=8, perform_ping_check=False, loglevel="WARNING"):
            again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    finally:
        reset_gateway()
        client.close()
    assert again.returncode == 0, again.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["index"], r["output"]) for r in rows] == [(i, {"y": 2 * i}) for i in range(n)]
    assert ep.submissions() == n and ep.stats("ep").get("run", 0) == n
