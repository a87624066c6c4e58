"""``bridge.run`` with webhooks (BRIDGE_WEBHOOK_URL set): the whole path with real parts.
An embedded threads worker submits with a per-job secret URL to the local endpoint, which
delivers its webhook to a real receiver; the waiting task completes without status requests.
Forged secrets are refused, a webhook that never comes falls back to slow polling, the
caller's own webhook gets the verified body relayed, and the secret shows up nowhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests
from aiohttp import web
from celery.contrib.testing.worker import start_worker
from celery_helpers import AiohttpServer, Stack, make_app, wait_until

from bridge import keys
from bridge.embedded_redis import EmbeddedRedis
from bridge.gateway.core import reset_gateway
from bridge.testing import LocalEndpoint
from bridge.webhooks.receiver import make_app as receiver_app
from bridge.webhooks.receiver import registration_key

FALLBACK = 2.0


async def slow(job: dict[str, Any]) -> Any:
    import asyncio

    await asyncio.sleep(float(job["input"].get("seconds", 0)))
    return {"y": job["input"]["x"] + 1}


@dataclass
class Hooked(Stack):
    receiver_url: str = ""
    relay_url: str = ""
    relayed: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def hooked(redis_server: EmbeddedRedis) -> Iterator[Hooked]:
    url = f"redis://127.0.0.1:{redis_server.port}/9"
    client = redis.Redis.from_url(url)
    client.flushdb()
    relayed: list[dict[str, Any]] = []

    async def mine(request: web.Request) -> web.Response:
        relayed.append(await request.json())
        return web.json_response({})

    caller = web.Application()
    caller.router.add_post("/mine", mine)
    receiver = AiohttpServer(receiver_app(url))
    caller_server = AiohttpServer(caller)
    ep = LocalEndpoint(slow, endpoint_id="hooked", workers=50, webhook_retry_delay=0.2)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"BRIDGE_REDIS_URL": url, "RUNPOD_ENDPOINT_BASE_URL": ep.base_url,
                           "BRIDGE_WEBHOOK_URL": receiver.url, "BRIDGE_WEBHOOK_FALLBACK": str(FALLBACK),
                           "BRIDGE_LONG_POLL": "5"}.items():
            mp.setenv(key, value)
        reset_gateway()
        app = make_app(url, "bridge-webhooks")
        with start_worker(app, pool="threads", concurrency=20, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=15):
            yield Hooked(app, ep, url, client, receiver.url, f"{caller_server.url}/mine", relayed)
        reset_gateway()
    ep.close()
    receiver.close()
    caller_server.close()
    client.close()


def status_requests(stack: Stack) -> int:
    stats = stack.endpoint.stats()
    return stats.get("status", 0) + stats.get("status-sync", 0)


def test_run_tasks_complete_by_webhook_without_status_requests(hooked, caplog):
    caplog.set_level(logging.DEBUG)
    before = status_requests(hooked)
    pending = [hooked.app.send_task("bridge.run", args=({"x": i}, "hooked")) for i in range(10)]
    relayed = hooked.app.send_task("bridge.run", args=({"x": 100}, "hooked"),
                                   kwargs={"webhook": hooked.relay_url})
    assert [p.get(timeout=30) for p in pending] == [{"y": i + 1} for i in range(10)]
    assert relayed.get(timeout=30) == {"y": 101}
    assert status_requests(hooked) == before
    # the endpoint got our receiver's URL with a secret; the caller's hook got the body relayed
    job_id = hooked.journal(relayed.id)["job_id"]
    sent = hooked.endpoint.job_state(job_id)["webhook"]
    assert sent.startswith(f"{hooked.receiver_url}/webhooks/{relayed.id}?token=")
    secret = sent.split("token=")[1]
    wait_until(lambda: hooked.relayed, 10)
    assert hooked.relayed[0]["output"] == {"y": 101} and hooked.relayed[0]["id"] == job_id
    assert secret not in json.dumps(hooked.relayed) and secret not in caplog.text
    assert secret not in str(hooked.redis.hgetall(keys.journal(relayed.id)))
    assert secret not in json.dumps(hooked.app.send_task("bridge.status", args=(job_id, "hooked")).get(timeout=10))
    assert not hooked.redis.exists(registration_key(relayed.id))  # forgotten once the job ended


def test_a_forged_secret_is_refused_and_changes_nothing(hooked):
    pending = hooked.app.send_task("bridge.run", args=({"x": 1, "seconds": 1.0}, "hooked"))
    job_id = hooked.job_id(pending.id)
    forged = requests.post(
        f"{hooked.receiver_url}/webhooks/{pending.id}?token={'0' * 64}",
        json={"id": job_id, "status": "COMPLETED", "output": {"y": "forged"}}, timeout=5,
    )
    assert forged.status_code == 403
    assert pending.get(timeout=30) == {"y": 2}


def test_a_webhook_that_never_comes_falls_back_to_polling(hooked):
    before = status_requests(hooked)
    pending = hooked.app.send_task("bridge.run", args=({"x": 5, "seconds": 0.5}, "hooked"))
    hooked.job_id(pending.id)
    # the receiver now answers 404 to this job's webhook: it never reaches the worker
    hooked.redis.delete(registration_key(pending.id))
    assert pending.get(timeout=30) == {"y": 6}
    assert status_requests(hooked) > before
