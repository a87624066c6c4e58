"""Webhook completion: a batch that needs no status requests, forged tokens, duplicates, relay."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio as aredis
from aiohttp import web

import bridge.batch
from bridge.testing import AppServer
from bridge.webhooks import WebhookReceiver, strip_body
from bridge.webhooks.receiver import SafeAccessLogger, inbox_key, make_app, registration_key
from bridge.webhooks.secrets import receiver_key, webhook_url

from .conftest import wait_until


def Server(app: web.Application) -> AppServer:
    """The receiver RunPod would reach, on 127.0.0.1."""
    return AppServer(app, access_log_class=SafeAccessLogger)


@pytest.fixture
def receiver(redis_url: str) -> Iterator[Server]:
    server = Server(make_app(redis_url))
    yield server
    server.close()


@pytest.fixture
def caller_hook() -> Iterator[tuple[Server, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/mine", hook)
    server = Server(app)
    yield server, got
    server.close()


def test_batch_completes_by_webhook_without_status_requests(local_endpoint, receiver, redis_url, caller_hook,
                                                            caplog):
    caplog.set_level(logging.DEBUG)
    ep = local_endpoint(lambda job: {"y": job["input"]["x"] + 1}, endpoint_id="hooked", webhook_retry_delay=0.2)
    hook_server, relayed = caller_hook
    hooks = WebhookReceiver(receiver.url, redis_url, fallback_after=30, relay=f"{hook_server.url}/mine")
    handle = bridge.batch.batch([{"x": i} for i in range(20)], "hooked", base_url=ep.base_url, webhooks=hooks)
    results = handle.results(timeout=30)
    assert [r.output for r in results] == [{"y": i + 1} for i in range(20)]
    stats = ep.stats()
    assert stats.get("status", 0) == 0 and stats.get("status-sync", 0) == 0
    # The endpoint was handed a secret URL; nothing we keep or relay contains the secret.
    state = ep.job_state(results[0].job_id)
    assert "token=" in state["webhook"]
    secret = state["webhook"].split("token=")[1]
    wait_until(lambda: len(relayed) == 20, 10, "20 relayed webhooks")
    assert secret not in json.dumps(relayed) and secret not in json.dumps([r.to_json() for r in results])
    assert "POST /webhooks/" in caplog.text and secret not in caplog.text  # access log without the token
    assert {body["output"]["y"] for body in relayed} == set(range(1, 21))


async def test_forged_token_is_rejected_and_duplicates_ignored(receiver, redis_url):
    r = redis.Redis.from_url(redis_url)
    ref, inbox = "b-b1-0", "test-inbox"
    r.hset(registration_key(ref), mapping={"inbox": inbox, "ttl": "60"})
    key = await receiver_key(aredis.Redis.from_url(redis_url))
    url = webhook_url(receiver.url, key, ref)
    body = {"id": "job-1", "status": "COMPLETED", "output": 42, "webhook": url}
    async with aiohttp.ClientSession() as session:
        forged = url.split("token=")[0] + "token=" + "0" * 64
        async with session.post(forged, json=body) as resp:
            assert resp.status == 403
        async with session.post(url.split("?")[0], json=body) as resp:
            assert resp.status == 403  # no token at all
        assert r.llen(inbox_key(inbox)) == 0
        assert r.hget(registration_key(ref), "delivered") is None
        for _ in range(2):  # RunPod retries: the second is a duplicate
            async with session.post(url, json=body) as resp:
                assert resp.status == 200
        async with session.post(url, json=body) as resp:
            assert (await resp.json())["outcome"] == "duplicate"
    assert r.llen(inbox_key(inbox)) == 1
    delivered = json.loads(r.lindex(inbox_key(inbox), 0))
    assert delivered["body"]["output"] == 42
    assert "token=" not in delivered["body"]["webhook"]  # the echoed URL is stripped
    assert strip_body(body)["webhook"] == url.split("?")[0]


def test_lost_webhook_falls_back_to_slow_polling(local_endpoint, redis_url):
    ep = local_endpoint(lambda job: job["input"], endpoint_id="lost", webhook_retries=0)
    # Nobody listens at this URL: every webhook is lost.
    hooks = WebhookReceiver("http://127.0.0.1:9", redis_url, fallback_after=0.5, fallback_interval=0.5)
    handle = bridge.batch.batch([{"x": 1}, {"x": 2}], "lost", base_url=ep.base_url, webhooks=hooks)
    assert [r.output for r in handle.results(timeout=30)] == [{"x": 1}, {"x": 2}]
    assert ep.stats().get("status", 0) >= 2


async def sleepy(job: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(6)
    return {"slept": 6}


@pytest.mark.slow
def test_webhook_after_a_long_idle_wait(local_endpoint, receiver, redis_url):
    # Longer than redis-py's 5 s socket timeout: the inbox listener must survive idle reads.
    ep = local_endpoint(sleepy, endpoint_id="sleepy")
    hooks = WebhookReceiver(receiver.url, redis_url, fallback_after=60)
    handle = bridge.batch.batch([{}, {}], "sleepy", base_url=ep.base_url, webhooks=hooks)
    assert [r.output for r in handle.results(timeout=30)] == [{"slept": 6}] * 2
    assert ep.stats().get("status", 0) == 0 and ep.stats().get("status-sync", 0) == 0


async def test_deliveries_can_go_to_a_callback(receiver, redis_url):
    # How the gateway's poller would take webhooks: register a task id, get told on delivery.
    waiter = WebhookReceiver(receiver.url, redis_url).waiter()
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    waiter.on_delivery = lambda ref, body: got.set_result((ref, body))
    url = await waiter.url_for("task-123", await_here=False)
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"id": "j", "status": "FAILED", "error": "x", "webhook": url}) as resp:
            assert resp.status == 200
    ref, body = await asyncio.wait_for(got, 10)
    assert ref == "task-123" and body["status"] == "FAILED" and "token" not in body["webhook"]
    await waiter.forget("task-123")
    await waiter.close()


def test_cli_batch_with_webhooks(local_endpoint, receiver, redis_url, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    ep = local_endpoint(lambda job: {"y": job["input"]["x"]}, endpoint_id="cli-hooks")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(30)))
    env = dict(os.environ, BRIDGE_REDIS_URL=redis_url, RUNPOD_ENDPOINT_BASE_URL=ep.base_url)
    proc = subprocess.run([str(Path(sys.executable).with_name("bridge")), "batch", str(inp), "-o", str(out),
                           "-e", "cli-hooks", "--webhooks", receiver.url], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["output"] for r in rows] == [{"y": i} for i in range(30)]
    assert ep.stats().get("status", 0) == 0 and ep.stats().get("status-sync", 0) == 0
