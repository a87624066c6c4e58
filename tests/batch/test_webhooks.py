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
from bridge import keys
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


def raw_post(port: int, path: str, headers: dict[str, str], body_part: bytes) -> tuple[int, bytes]:
    """Send a request's headers and only ``body_part`` of its body; return the answer's status
    line and body (the receiver must answer without the rest)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body_part)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 10:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


async def registered(redis_url: str, receiver: Server, ref: str, inbox: str = "inbox-1") -> str:
    r = redis.Redis.from_url(redis_url)
    r.hset(registration_key(ref), mapping={"inbox": inbox, "ttl": "60"})
    return webhook_url(receiver.url, await receiver_key(aredis.Redis.from_url(redis_url)), ref)


async def test_the_token_is_checked_before_the_body_is_read(receiver, redis_url):
    url = await registered(redis_url, receiver, "b-big-0")
    path = url.split(str(receiver.port), 1)[1]
    forged = path.split("token=")[0] + "token=" + "0" * 64
    huge = {"Content-Type": "application/json", "Content-Length": str(30 * 2**20)}
    # 30 MB announced, 1 KB sent: a forged token is refused at once, the body never read.
    status, body = await asyncio.to_thread(raw_post, receiver.port, forged, huge, b"{" + b" " * 1023)
    assert status == 403 and b"forbidden" in body
    # A real token with a body over the cap: 413 before reading it.
    status, body = await asyncio.to_thread(raw_post, receiver.port, path, huge, b"{" + b" " * 1023)
    assert status == 413 and b"too_large" in body
    assert redis.Redis.from_url(redis_url).llen(inbox_key("inbox-1")) == 0


async def test_a_chunked_body_over_the_cap_is_refused(receiver, redis_url):
    from bridge.webhooks.receiver import MAX_BODY

    url = await registered(redis_url, receiver, "b-chunked-0")

    async def too_big():
        yield b'{"output": "'
        for _ in range(MAX_BODY // 2**20 + 1):
            yield b"x" * 2**20
        yield b'"}'

    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=too_big()) as resp:  # no Content-Length: chunked
            assert resp.status == 413
        async with session.post(url, json={"id": "j", "status": "COMPLETED", "output": "x" * 2**20}) as resp:
            assert resp.status == 200  # under the cap (and over aiohttp's 1 MB default)


async def test_the_receiver_picks_up_a_key_that_changed_after_it_vanished(receiver, redis_url):
    r = redis.Redis.from_url(redis_url)
    old_url = await registered(redis_url, receiver, "b-old-0", "inbox-old")
    name = keys.webhook_secret("_receiver_key")
    old_key = r.get(name)
    r.delete(name)  # Redis flushed / restarted without persistence
    # A worker started now makes a new key and hands out URLs signed with it.
    waiter = WebhookReceiver(receiver.url, redis_url).waiter()
    new_url = await waiter.url_for("b-new-0", await_here=False)
    assert r.get(name) not in (None, old_key)
    async with aiohttp.ClientSession() as session:
        async with session.post(new_url, json={"id": "j-new", "status": "COMPLETED"}) as resp:
            assert resp.status == 200 and (await resp.json())["outcome"] == "delivered"
        async with session.post(old_url, json={"id": "j-old", "status": "COMPLETED"}) as resp:
            assert resp.status == 200  # jobs submitted before the change still complete
    await waiter.close()


async def test_a_vanished_key_is_restored_for_urls_already_handed_out(receiver, redis_url):
    r = redis.Redis.from_url(redis_url)
    name = keys.webhook_secret("_receiver_key")
    url = await registered(redis_url, receiver, "b-keep-0")
    key = r.get(name)
    r.delete(name)
    async with aiohttp.ClientSession() as session:
        async with session.post(url.split("token=")[0] + "token=" + "0" * 64, json={}) as resp:
            assert resp.status == 403  # a miss makes the receiver look again, and put its key back
    assert r.get(name) == key
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"id": "j", "status": "COMPLETED"}) as resp:
            assert resp.status == 200


async def test_replays_are_taken_once_even_after_the_ref_is_registered_again(receiver, redis_url):
    waiter = WebhookReceiver(receiver.url, redis_url).waiter()
    got: list[dict[str, Any]] = []
    waiter.on_delivery = lambda ref, body: got.append(body)
    url = await waiter.url_for("task-r", await_here=False)
    body = {"id": "job-1", "status": "COMPLETED", "output": 1}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as resp:
            assert (await resp.json())["outcome"] == "delivered"
        await waiter.url_for("task-r", await_here=False)  # registered again (a resumed task)
        async with session.post(url, json=body) as resp:  # the captured request, replayed
            assert resp.status == 200 and (await resp.json())["outcome"] == "duplicate"
        async with session.post(url, json={**body, "id": "job-2"}) as resp:  # a new job for the ref
            assert (await resp.json())["outcome"] == "delivered"
    await asyncio.to_thread(wait_until, lambda: len(got) == 2, 10, "2 deliveries")
    assert [b["id"] for b in got] == ["job-1", "job-2"]
    await waiter.close()


async def test_a_newline_in_a_ref_cannot_forge_a_log_line(receiver, caplog):
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as session:
        forged_line = "%0A2026-01-01 CRITICAL forged line"
        async with session.post(f"{receiver.url}/webhooks/x{forged_line.replace(' ', '%20')}?token=bad%0Aq",
                                json={}) as resp:
            assert resp.status == 403
    lines = caplog.text.splitlines()
    assert lines and not any(line.startswith("2026-01-01") for line in lines)
    assert "token=bad" not in caplog.text and "forged line" not in "\n".join(
        m for rec in caplog.records for m in rec.getMessage().splitlines()[1:])


async def test_a_running_waiter_follows_a_changed_receiver_key(receiver, redis_url, monkeypatch):
    """A worker that read the key before it vanished and was remade hands out URLs signed
    with the new key after its re-check (instead of URLs every delivery of which gets 403)."""
    import bridge.webhooks.waiter as waiter_mod

    r = redis.Redis.from_url(redis_url)
    name = keys.webhook_secret("_receiver_key")
    waiter = WebhookReceiver(receiver.url, redis_url).waiter()
    await waiter.url_for("b-follow-0", await_here=False)
    r.delete(name)
    r.set(name, "ab" * 32)  # another process remade it
    monkeypatch.setattr(waiter_mod, "KEY_RECHECK", 0.0)
    url = await waiter.url_for("b-follow-1", await_here=False)
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"id": "j-follow", "status": "COMPLETED"}) as resp:
            assert resp.status == 200 and (await resp.json())["outcome"] == "delivered"
    await waiter.close()
