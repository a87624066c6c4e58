"""The local endpoint without long polls (``LocalEndpoint(long_poll=False)``, ``bridge serve
--no-long-poll``): ``/status-sync`` answers exactly as an unknown route does, every other
route is unchanged. Real endpoint on loopback, raw HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cli.serving import ServeProcess, serve_processes

import bridge
from bridge.testing import wait_until

from .conftest import Client


async def ahandler(job: dict[str, Any]) -> Any:
    data = job["input"]
    if isinstance(data, dict) and "sleep" in data:
        await asyncio.sleep(data["sleep"])
    return {"echo": data}


def tokens(job: dict[str, Any]) -> Iterator[str]:
    yield from job["input"]["words"]


def _same_answer(a: requests.Response, b: requests.Response) -> None:
    """Two answers alike but for the path each names."""
    assert (a.status_code, b.status_code) == (404, 404)
    assert a.headers["Content-Type"] == b.headers["Content-Type"]
    assert a.json() == {"error": f"no route {a.request.method} {a.request.path_url.split('?')[0]}"}
    assert b.json() == {"error": f"no route {b.request.method} {b.request.path_url.split('?')[0]}"}


def test_status_sync_is_an_unknown_route_and_the_rest_is_unchanged(local_endpoint):
    ep = local_endpoint(ahandler, endpoint_id="plain", long_poll=False)
    c = Client(ep)
    job_id = c.run({"x": 1})
    # Before the job ends and after: the same 404 as a path nobody serves, GET and POST.
    for method in ("get", "post"):
        held = getattr(c, method)("status-sync", job_id, params={"wait": 2000})
        unknown = getattr(c, method)("no-such-route", job_id)
        _same_answer(held, unknown)
    done = c.wait_status(job_id, "COMPLETED")
    assert done["output"] == {"echo": {"x": 1}}
    assert isinstance(done["executionTime"], int) and isinstance(done["delayTime"], int)
    _same_answer(c.get("status-sync", job_id), c.get("no-such-route", job_id))
    # runsync, cancel and health as always
    r = c.post("runsync", json={"input": {"y": 2}})
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED" and r.json()["output"] == {"echo": {"y": 2}}
    slow = c.run({"sleep": 30})
    assert c.post("cancel", slow).json() == {"id": slow, "status": "CANCELLED"}
    assert c.status(slow)["status"] == "CANCELLED"
    assert c.get("health").status_code == 200
    # counted (known endpoint, no key required here) so a client that keeps asking shows
    assert ep.stats()["status-sync"] == 3


def test_stream_is_unchanged_without_long_polls(local_endpoint):
    ep = local_endpoint(tokens, endpoint_id="words", long_poll=False)
    c = Client(ep)
    job_id = c.run({"words": ["a", "b", "c"]})
    c.wait_status(job_id, "COMPLETED")
    body = c.get("stream", job_id).json()
    assert body["status"] == "COMPLETED"
    assert [chunk["output"] for chunk in body["stream"]] == ["a", "b", "c"]
    assert c.get("stream", job_id).json()["stream"] == []  # drained


def test_the_404_comes_before_the_key_check_as_for_an_unknown_route(local_endpoint):
    ep = local_endpoint(ahandler, endpoint_id="keyed", api_key="sekret", long_poll=False)
    nokey = Client(ep)
    keyed = Client(ep, headers={"Authorization": "Bearer sekret"})
    job_id = keyed.run({"z": 3})
    # Without a key an unknown route is 404 (the router answers before any check); so is status-sync.
    _same_answer(nokey.get("status-sync", job_id), nokey.get("no-such-route", job_id))
    assert nokey.get("status", job_id).status_code == 401
    assert ep.stats().get("status-sync", 0) == 0  # an unauthenticated request leaves no trace
    _same_answer(keyed.get("status-sync", job_id), keyed.get("no-such-route", job_id))
    assert ep.stats()["status-sync"] == 1


def test_long_polls_can_be_switched_while_serving(local_endpoint):
    ep = local_endpoint(ahandler, endpoint_id="switch")
    c = Client(ep)
    job_id = c.run({"sleep": 0.2})
    assert c.get("status-sync", job_id, params={"wait": 5000}).json()["status"] == "COMPLETED"
    ep.set_long_poll(False)
    assert c.get("status-sync", job_id).status_code == 404
    ep.set_long_poll(True)
    assert c.get("status-sync", job_id).json()["status"] == "COMPLETED"


def test_bridge_client_falls_back_to_status_and_asks_status_sync_once(local_endpoint):
    ep = local_endpoint(ahandler, endpoint_id="fallback", long_poll=False)
    with bridge.Endpoint("fallback", base_url=ep.base_url, api_key="unused") as client:
        outputs = [client.run({"n": i}).output(timeout=30) for i in range(3)]
    assert outputs == [{"echo": {"n": i}} for i in range(3)]
    stats = ep.stats()
    assert stats.get("status-sync", 0) == 1  # the missing route is remembered per endpoint
    assert stats["status"] >= 3


def test_official_sdk_works_unchanged_without_long_polls(local_endpoint):
    import runpod
    ep = local_endpoint(ahandler, endpoint_id="sdk", long_poll=False)
    saved = runpod.endpoint_url_base
    runpod.endpoint_url_base = ep.base_url
    try:
        job = runpod.Endpoint("sdk", api_key="unused").run({"input": {"k": 1}})
        assert job.output(timeout=30) == {"echo": {"k": 1}}
    finally:
        runpod.endpoint_url_base = saved
    assert ep.stats().get("status-sync", 0) == 0  # the SDK never long-polls


@pytest.fixture
def served() -> Iterator[list[ServeProcess]]:
    yield from serve_processes()


def test_bridge_serve_no_long_poll_flag(served):
    s = ServeProcess("examples/handlers.py:aecho", "-e", "echo", "--no-long-poll")
    served.append(s)
    job_id = requests.post(f"{s.base_url}/echo/run", json={"input": {"q": 1}}, timeout=10).json()["id"]
    held = requests.get(f"{s.base_url}/echo/status-sync/{job_id}?wait=1000", timeout=10)
    unknown = requests.get(f"{s.base_url}/echo/no-such-route/{job_id}", timeout=10)
    _same_answer(held, unknown)
    body = wait_until(lambda: (b := requests.get(f"{s.base_url}/echo/status/{job_id}", timeout=10).json())
                      ["status"] == "COMPLETED" and b, timeout=10)
    assert body["output"] == {"q": 1}
    assert s.stop() == 0


def test_bridge_serve_keeps_long_polls_by_default(served):
    s = ServeProcess("examples/handlers.py:aecho", "-e", "echo")
    served.append(s)
    job_id = requests.post(f"{s.base_url}/echo/run", json={"input": {"q": 2}}, timeout=10).json()["id"]
    held = requests.get(f"{s.base_url}/echo/status-sync/{job_id}?wait=5000", timeout=10)
    assert held.status_code == 200 and held.json()["status"] == "COMPLETED"
