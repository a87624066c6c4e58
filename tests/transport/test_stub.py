"""StubTransport / AsyncStubTransport: scripted per route, every call recorded, no sockets."""

from __future__ import annotations

import asyncio

import pytest

from bridge import errors
from bridge.testing import AsyncStubTransport, StubTransport, reply
from bridge.transport import AsyncTransport, Reply, Transport
from bridge.wire import Call, Wire

WIRE = Wire("ep", base_url="http://127.0.0.1:1/v2")


def script() -> dict[str, list]:
    return {
        "run": [reply(200, {"id": "j1", "status": "IN_QUEUE"})],
        "status": [
            reply(200, {"id": "j1", "status": "IN_PROGRESS"}),
            reply(500, {"error": "busy"}),
            errors.TransportError("down", None, "ep"),
            reply(200, {"id": "j1", "status": "COMPLETED", "output": 42}),
        ],
    }


def outcome(stub: StubTransport, call: Call) -> object:
    """What the wire makes of the stub's answer: the body, or the error (raised or made)."""
    try:
        got = stub.send(call)
    except errors.TransportError as exc:
        return type(exc)
    try:
        return WIRE.response(call, got.status, got.headers, got.body)
    except errors.EndpointError as exc:
        return type(exc)


def test_each_route_answers_from_its_script_and_the_last_entry_repeats() -> None:
    stub = StubTransport(script())
    assert isinstance(stub, Transport)
    assert outcome(stub, WIRE.run({"prompt": "hi"}, idempotency_key="k1")) == {"id": "j1", "status": "IN_QUEUE"}
    looks = [outcome(stub, WIRE.status("j1")) for _ in range(5)]
    assert looks == [
        {"id": "j1", "status": "IN_PROGRESS"},
        errors.ServerError,
        errors.TransportError,
        {"id": "j1", "status": "COMPLETED", "output": 42},
        {"id": "j1", "status": "COMPLETED", "output": 42},
    ]
    assert stub.routes() == ["run"] + ["status"] * 5 and stub.count("status") == 5
    first = stub.calls[0]
    assert (first.method, first.route, first.url) == ("POST", "run", "http://127.0.0.1:1/v2/ep/run")
    assert first.json == {"input": {"prompt": "hi"}} and first.call.headers["Idempotency-Key"] == "k1"
    assert stub.calls[1].json is None and stub.calls[1].job_id == "j1"


def test_a_callable_entry_answers_from_the_call() -> None:
    def echo(call: Call) -> Reply:
        return reply(200, {"id": call.headers["Idempotency-Key"], "status": "IN_QUEUE"})

    stub = StubTransport({"run": [echo]})
    assert outcome(stub, WIRE.run({}, idempotency_key="a")) == {"id": "a", "status": "IN_QUEUE"}
    assert outcome(stub, WIRE.run({}, idempotency_key="b")) == {"id": "b", "status": "IN_QUEUE"}


def test_reply_headers_are_case_insensitive_as_from_a_real_transport() -> None:
    stub = StubTransport({"health": [reply(429, {"error": "slow down"}, {"retry-after": "7"})]})
    call = WIRE.health()
    got = stub.send(call)
    with pytest.raises(errors.RateLimited) as info:
        WIRE.response(call, got.status, got.headers, got.body)
    assert info.value.retry_after == 7.0


def test_an_unscripted_route_fails_the_test_and_an_empty_script_is_refused() -> None:
    stub = StubTransport({"run": [reply(200, {"id": "j1", "status": "IN_QUEUE"})]})
    with pytest.raises(AssertionError, match=r"unexpected POST /cancel .*\['run'\]"):
        stub.send(WIRE.cancel("j1"))
    assert stub.routes() == ["cancel"]  # recorded all the same
    with pytest.raises(ValueError, match="'status'"):
        StubTransport({"status": []})


def test_the_async_stub_answers_the_same_way() -> None:
    stub = AsyncStubTransport(script())
    assert isinstance(stub, AsyncTransport)

    async def look() -> list[int]:
        statuses = [(await stub.send(WIRE.status("j1"))).status for _ in range(2)]
        with pytest.raises(errors.TransportError):
            await stub.send(WIRE.status("j1"))
        statuses.append((await stub.send(WIRE.status("j1"))).status)
        await stub.aclose()
        return statuses

    assert asyncio.run(look()) == [200, 500, 200]
    assert stub.closed and stub.routes() == ["status"] * 4
