"""The API keys bridge knows are masked in everything an endpoint answers (outputs, chunks,
error text) in one place, the wire, and in webhook bodies the gateway's poller receives.
The wire's parsing needs no I/O; the webhook inbox is a real redis-server."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from bridge import errors
from bridge.client._wire import Call, Wire, known_keys, remember_key, scrub_value
from bridge.webhooks.receiver import inbox_key
from bridge.webhooks.waiter import WebhookWaiter

BASE = "http://127.0.0.1:9/v2"
KEY = "local-endpoint-key-4f2a9c"  # no credential shape: only knowing it finds it
OTHER = "second-endpoint-key-77b1"


def answer(wire: Wire, body: object, route: str = "status") -> dict:
    call = Call("GET", f"{BASE}/ep/{route}/j1", route, wire.headers, job_id="j1")
    return wire.response(call, 200, {}, json.dumps(body).encode())


def test_a_completed_output_echoing_the_key_is_masked_everywhere_in_it() -> None:
    wire = Wire("ep", KEY, BASE)
    body = answer(wire, {"id": "j1", "status": "COMPLETED",
                         "output": {"text": f"key={KEY}.", "list": [KEY, 3, None], KEY: {"x": KEY}}})
    assert body["output"] == {"text": "key=***.", "list": ["***", 3, None], "***": {"x": "***"}}
    assert wire.outcome(body) == body["output"]


def test_stream_chunks_and_other_known_keys_are_masked() -> None:
    Wire("other", OTHER, BASE)  # another endpoint's key this process sends is known too
    wire = Wire("ep", KEY, BASE)
    body = answer(wire, {"id": "j1", "status": "IN_PROGRESS",
                         "stream": [{"output": f"a {KEY}"}, {"output": f"b {OTHER}"}]}, "stream")
    assert body["stream"] == [{"output": "a ***"}, {"output": "b ***"}]
    assert {KEY, OTHER} <= set(known_keys())


def test_an_answer_without_a_key_is_returned_as_parsed() -> None:
    wire = Wire("ep", KEY, BASE)
    output = {"text": "nothing secret", "n": [1, 2]}
    assert scrub_value(output) is output  # not copied
    assert answer(wire, {"id": "j1", "status": "COMPLETED", "output": output})["output"] == output


def test_a_failed_jobs_error_text_is_masked() -> None:
    wire = Wire("ep", KEY, BASE)
    body = answer(wire, {"id": "j1", "status": "FAILED", "error": f"refused {KEY}"})
    with pytest.raises(errors.JobFailed) as info:
        wire.outcome(body)
    assert KEY not in str(info.value) and KEY not in str(info.value.args) and "refused ***" in str(info.value)


def test_a_key_json_may_escape_is_found_escaped() -> None:
    slashed = "key/with/slashes-123"
    wire = Wire("ep", slashed, BASE)
    raw = b'{"id": "j1", "status": "COMPLETED", "output": "' + slashed.replace("/", "\\/").encode() + b'"}'
    call = Call("GET", f"{BASE}/ep/status/j1", "status", wire.headers, job_id="j1")
    assert wire.response(call, 200, {}, raw)["output"] == "***"


def test_short_keys_are_not_masked_in_outputs() -> None:
    remember_key("abc")  # would mangle ordinary text
    assert "abc" not in known_keys()
    assert scrub_value({"word": "abcdef"}) == {"word": "abcdef"}


async def test_a_webhook_body_is_masked_before_any_waiter_sees_it(redis_url: str) -> None:
    """Deliveries reach the batch engine (wait_for) and the gateway (on_delivery: its Watches)
    through the waiter's inbox listener, which masks them once for both."""
    Wire("ep", KEY, BASE)
    waiter = WebhookWaiter("http://127.0.0.1:9", redis_url)
    delivered: list[dict] = []
    arrived = asyncio.Event()

    def on_delivery(ref: str, body: dict) -> None:
        delivered.append(body)
        arrived.set()

    waiter.on_delivery = on_delivery
    await waiter.url_for("awaited")
    client = aioredis.Redis.from_url(redis_url)
    try:
        for ref in ("awaited", "for-the-poller"):
            body = {"id": "j1", "status": "COMPLETED", "output": {"echo": f"key {KEY}"}}
            await client.rpush(inbox_key(waiter.inbox), json.dumps({"ref": ref, "body": body}))
        got = await waiter.wait_for("awaited", 10)
        assert got is not None and got["output"] == {"echo": "key ***"}
        await asyncio.wait_for(arrived.wait(), 10)
        assert delivered[0]["output"] == {"echo": "key ***"}
    finally:
        await waiter.close()
        await client.aclose()
