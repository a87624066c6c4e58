"""``bridge serve`` hardening: the API key before any bookkeeping, header and body timeouts,
the nesting-depth limit, strict JSON both ways, and the test-only ``status_override`` fault."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bridge.local import bodies, progress_update

from .conftest import Client
from .test_cli import Served
from .test_control import Gate

KEY = "local-sekret-key"


def _strict(text: str) -> Any:
    """Parse as JSON proper: NaN/Infinity raise instead of being accepted as Python does."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a JSON answer: {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def _bookkeeping(ep: Any) -> dict[str, Any]:
    server = ep.server
    store = ep.endpoint().store

    def snapshot() -> dict[str, Any]:
        return {
            "stats": server.all_stats(),
            "counted_endpoints": sorted(server._counts),
            "jobs": sorted(store.jobs),
            "idempotency": dict(store._idempotency),
            "buckets": sorted(server.faults._buckets),
            "queued": store.in_queue,
        }

    return ep._call(snapshot)


def test_unauthenticated_requests_leave_no_trace(local_endpoint):
    ep = local_endpoint(api_key=KEY, faults={"rate_limits": {"run": [1000, 10], "status": [1000, 10]}})
    good = Client(ep, headers={"Authorization": f"Bearer {KEY}"})
    job_id = good.run({"x": 1})
    good.wait(job_id)
    before = _bookkeeping(ep)
    assert before["stats"]["requests"]["test"]["run"] == 1 and before["jobs"] == [job_id]

    root = ep.base_url.removesuffix("/v2")
    session = requests.Session()
    codes = set()
    for i in range(300):
        headers = {"Idempotency-Key": f"k-{i}"}
        if i % 2:
            headers["Authorization"] = f"Bearer wrong-{i}"
        other = f"ep-{uuid.uuid4()}-{'x' * 1000}"  # distinct, long endpoint ids
        for method, url, body in (
            ("POST", f"{ep.base_url}/test/run", {"input": {"i": i}}),
            ("POST", f"{ep.base_url}/{other}/runsync", {"input": {"i": i}}),
            ("GET", f"{ep.base_url}/test/status/{uuid.uuid4()}", None),
            ("GET", f"{ep.base_url}/{other}/health", None),
            ("GET", f"{root}/_bridge/stats", None),
        ):
            codes.add(session.request(method, url, json=body, headers=headers, timeout=10).status_code)
    assert codes == {401}
    assert _bookkeeping(ep) == before

    # With the key: an unknown endpoint is a 404 and still adds no stats entry.
    assert good.session.get(f"{ep.base_url}/nope-{uuid.uuid4()}/health", timeout=10).status_code == 404
    assert _bookkeeping(ep) == before
    # Counting itself still works for authenticated requests to a served endpoint.
    good.status(job_id)
    assert ep.stats()["status"] == before["stats"]["requests"]["test"].get("status", 0) + 1


def _recv_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket timeout: fail)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture
def serve_process() -> Iterator[Served]:
    s = Served("examples/handlers.py:echo", "-e", "echo", "--header-timeout", "0.5", "--body-timeout", "0.5")
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(5)


def test_bridge_serve_closes_half_sent_requests_and_keeps_serving(serve_process):
    s = serve_process
    other = requests.Session()
    with (
        socket.create_connection(("127.0.0.1", s.port), timeout=15) as half_head,
        socket.create_connection(("127.0.0.1", s.port), timeout=15) as silent,
        socket.create_connection(("127.0.0.1", s.port), timeout=15) as half_body,
    ):
        half_head.sendall(b"POST /v2/echo/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        half_body.sendall(b"POST /v2/echo/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"input\": ")
        # While those connections hang, other clients are served.
        r = other.post(f"{s.base_url}/echo/runsync", json={"input": {"a": 1}}, timeout=10)
        assert r.status_code == 200 and r.json()["output"] == {"a": 1}
        # The generous socket timeout (15 s) is the deadline; the server's limits are 0.5 s.
        assert _recv_all(half_head) == b""
        assert _recv_all(silent) == b""
        answer = _recv_all(half_body)
        assert answer.startswith(b"HTTP/1.1 408")
        error = _strict(answer.split(b"\r\n\r\n", 1)[1].decode())["error"]
        assert "request body not received within 0.5 s" in error
    r = other.post(f"{s.base_url}/echo/runsync", json={"input": {"b": 2}}, timeout=10)
    assert r.json()["output"] == {"b": 2}
    stats = requests.get(s.base_url.removesuffix("/v2") + "/_bridge/stats", timeout=10).json()
    assert stats["submissions"] == {"echo": 2}  # the half-sent /run created no job
    assert s.stop() == 0


def test_timeouts_are_localendpoint_arguments_with_defaults(local_endpoint):
    assert (local_endpoint().server.header_timeout, local_endpoint().server.body_timeout) == (
        bodies.HEADER_TIMEOUT, bodies.BODY_TIMEOUT) == (15.0, 60.0)
    ep = local_endpoint(header_timeout=0.3, body_timeout=0.3)
    with socket.create_connection(("127.0.0.1", ep.port), timeout=15) as sock:
        sock.sendall(b"POST /_bridge/faults HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        assert _recv_all(sock).startswith(b"HTTP/1.1 408")
    assert ep.faults()["error_rate"] == {}
    with pytest.raises(ValueError):
        local_endpoint(body_timeout=0)


def _nested(depth: int) -> bytes:
    """A request body nesting ``depth`` levels in all (the outer object counts)."""
    return b'{"input": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_nesting_depth_limit_is_a_400(local_endpoint):
    ep = local_endpoint()
    c = Client(ep)
    headers = {"Content-Type": "application/json"}
    r = c.post("run", data=b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=headers)
    assert r.status_code == 400
    assert r.json() == {"error": "request body nests arrays/objects deeper than 128 levels"}
    assert c.post("runsync", data=_nested(129), headers=headers).status_code == 400
    deepest = c.post("runsync", data=_nested(128), headers=headers)
    assert deepest.status_code == 200, deepest.text
    value: Any = deepest.json()["output"]
    for _ in range(126):
        value = value[0]
    assert value == []
    # Brackets inside strings are text, not nesting; broken JSON stays "not valid JSON".
    text = {"input": {"s": "[{" * 5000 + '\\"]'}}
    assert c.post("runsync", json=text).json()["output"] == text["input"]
    broken = c.post("run", data=b'{"input": ' + b"[" * 200 + b"}", headers=headers)
    assert broken.status_code == 400 and broken.json() == {"error": "request body is not valid JSON"}
    faults = requests.post(ep.base_url.removesuffix("/v2") + "/_bridge/faults", data=_nested(200), timeout=10)
    assert faults.status_code == 400 and "deeper than 128" in faults.json()["error"]
    assert ep.submissions() == 2  # the two runsyncs within the limit


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-2E+400"])
def test_nan_and_infinite_inputs_are_refused(local_endpoint, literal):
    ep = local_endpoint()
    c = Client(ep)
    for route in ("run", "runsync"):
        r = c.post(route, data=b'{"input": {"x": [1, ' + literal + b"]}}", headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("request body is not strict JSON: ")
    assert ep.submissions() == 0
    assert c.post("runsync", json={"input": {"x": [1, 1e300, -0.5]}}).json()["output"] == {"x": [1, 1e300, -0.5]}


def nan_output(job: dict[str, Any]) -> Any:
    kind = job["input"]["kind"]
    if kind == "nan":
        return {"loss": float("nan")}
    if kind == "inf":
        return [float("inf")]
    if kind == "set":
        return {1, 2}
    if kind == "error":  # RunPod's error form with a rest that cannot be JSON
        return {"error": "it broke", "detail": float("nan")}
    return "fine"


def test_outputs_that_are_not_json_fail_the_job_and_answers_stay_strict(local_endpoint):
    ep = local_endpoint(nan_output)
    c = Client(ep)
    for kind, needle in (("nan", "NaN or Infinity"), ("inf", "NaN or Infinity"), ("set", "not JSON serializable")):
        job_id = c.run({"kind": kind})
        body = c.wait(job_id)
        assert body["status"] == "FAILED" and "output" not in body
        assert body["error"].startswith("the handler's output cannot be sent as JSON: ") and needle in body["error"]
        for answer in (c.get("status", job_id), c.get("stream", job_id)):
            assert answer.status_code == 200 and _strict(answer.text)["status"] == "FAILED"
    failed = c.wait(c.run({"kind": "error"}))
    assert failed["status"] == "FAILED" and failed["error"] == "it broke" and "output" not in failed
    assert c.wait(c.run({"kind": "ok"}))["output"] == "fine"


def nan_stream(job: dict[str, Any]) -> Any:
    yield {"i": 0}
    yield {"i": float("nan")}
    yield {"i": 2}  # never reached: the job failed and was told to stop


def test_a_nan_stream_chunk_fails_the_job_after_the_good_chunks(local_endpoint):
    ep = local_endpoint(nan_stream)
    c = Client(ep)
    job_id = c.run({})
    body = c.wait(job_id)
    assert body["status"] == "FAILED"
    assert body["error"].startswith("stream chunk 1 cannot be sent as JSON: it holds NaN or Infinity")
    stream = _strict(c.get("stream", job_id).text)
    assert stream["stream"] == [{"output": {"i": 0}}]
    assert ep.job_state(job_id)["stopped"] is True


def test_a_nan_progress_update_is_dropped_with_a_warning(local_endpoint, caplog):
    gate = Gate()

    async def handler(job: dict[str, Any]) -> Any:
        progress_update(job, {"step": 1})
        progress_update(job, {"step": float("nan")})
        return await gate(job)

    ep = local_endpoint(handler)
    c = Client(ep)
    with caplog.at_level(logging.WARNING, logger="bridge.local.jobs"):
        job_id = c.run({"done": True})
        running = c.wait_status(job_id, "IN_PROGRESS")
        assert running["output"] == {"step": 1}
        assert _strict(c.get("status", job_id).text)["output"] == {"step": 1}
        gate.release.set()
        assert c.wait(job_id)["output"] == {"done": True}
    assert any(job_id in r.getMessage() and "progress update dropped" in r.getMessage() for r in caplog.records)


def test_status_override_fault_reports_any_status_until_the_job_ends(local_endpoint):
    gate = Gate()
    ep = local_endpoint(gate)
    c = Client(ep)
    faults_url = ep.base_url.removesuffix("/v2") + "/_bridge/faults"
    first = c.run({"n": 1})
    c.wait_status(first, "IN_PROGRESS")
    r = requests.post(faults_url, json={"status_override": {first: "WEIRD"}}, timeout=10)
    assert r.status_code == 200 and r.json()["status_override"] == {first: "WEIRD"}
    assert c.status(first)["status"] == "WEIRD"
    assert c.get("stream", first).json()["status"] == "WEIRD"
    assert c.get("status-sync", first, params={"wait": 100}).json()["status"] == "WEIRD"
    ep.set_faults(status_override="ODD")  # one status for every job
    second = c.post("run", json={"input": {"n": 2}}).json()
    assert second["status"] == "ODD" and c.status(first)["status"] == "ODD"
    assert ep.job_state(first)["status"] == "IN_PROGRESS"  # only the answers change
    gate.release.set()
    assert c.wait(first)["output"] == {"n": 1} and c.wait(second["id"])["output"] == {"n": 2}
    assert c.status(first)["status"] == "COMPLETED"  # terminal jobs show their real status
    assert requests.post(faults_url, json={"status_override": 3}, timeout=10).status_code == 400
