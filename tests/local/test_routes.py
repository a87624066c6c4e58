"""Each RunPod route of the local endpoint and the response shapes of each outcome."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from .conftest import Client


async def ahandler(job: dict[str, Any]) -> Any:
    data = job["input"]
    if isinstance(data, dict) and "sleep" in data:
        await asyncio.sleep(data["sleep"])
    if isinstance(data, dict) and "return" in data:
        return data["return"]
    if isinstance(data, dict) and "raise" in data:
        raise KeyError(data["raise"])
    return {"echo": data, "keys": sorted(job)}


def test_run_then_status_reaches_completed_with_times(local_endpoint):
    c = Client(local_endpoint(ahandler))
    job_id = c.run({"a": 1})
    body = c.wait(job_id)
    assert body["status"] == "COMPLETED"
    assert body["id"] == job_id
    assert body["output"] == {"echo": {"a": 1}, "keys": ["id", "input"]}
    assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)
    assert "error" not in body
    # status answers GET and POST alike
    assert c.post("status", job_id).json() == c.get("status", job_id).json()


def test_handler_receives_only_runpod_request_keys(local_endpoint):
    c = Client(local_endpoint(lambda job: sorted(job)))
    r = c.post("runsync", json={"input": {}, "policy": {"lowPriority": False}, "s3Config": {"bucketName": "b"},
                                "extra": 1})
    assert r.json()["output"] == ["id", "input", "policy", "s3Config"]


def test_runsync_returns_final_body(local_endpoint):
    c = Client(local_endpoint(ahandler))
    r = c.post("runsync", json={"input": {"x": 2}})
    body = r.json()
    assert r.status_code == 200
    assert body["id"].startswith("sync-")
    assert body["status"] == "COMPLETED" and body["output"]["echo"] == {"x": 2}
    assert "delayTime" in body and "executionTime" in body


def test_runsync_past_wait_returns_id_and_status_and_job_stays_readable(local_endpoint):
    release = threading.Event()

    def blocking(job):
        release.wait(10)
        return "late"

    c = Client(local_endpoint(blocking))
    body = c.post("runsync", params={"wait": 50}, json={"input": {}}).json()
    assert set(body) == {"id", "status"} and body["status"] in ("IN_QUEUE", "IN_PROGRESS")
    release.set()
    assert c.wait(body["id"])["output"] == "late"


def test_status_sync_returns_as_soon_as_terminal_and_on_wait_expiry(local_endpoint):
    release = threading.Event()

    def blocking(job):
        release.wait(10)
        return 7

    ep = local_endpoint(blocking)
    c = Client(ep)
    job_id = c.run()
    # wait elapses: the current non-terminal status comes back
    body = c.get("status-sync", job_id, params={"wait": 100}).json()
    assert body["status"] in ("IN_QUEUE", "IN_PROGRESS")
    result: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: result.update(c.get("status-sync", job_id, params={"wait": 20000}).json()))
    poller.start()
    c.wait_status(job_id, "IN_PROGRESS")
    assert not result  # still held by the long poll
    release.set()
    poller.join(5)
    assert not poller.is_alive(), "status-sync did not return when the job finished"
    assert result["status"] == "COMPLETED" and result["output"] == 7
    assert c.post("status-sync", job_id, params={"wait": 1000}).json()["status"] == "COMPLETED"


def test_error_return_makes_failed_with_rest_as_output(local_endpoint):
    c = Client(local_endpoint(ahandler))
    body = c.post("runsync", json={"input": {"return": {"error": "bad input", "partial": 1}}}).json()
    assert body["status"] == "FAILED"
    assert body["error"] == "bad input"
    assert body["output"] == {"partial": 1}
    only = c.post("runsync", json={"input": {"return": {"error": "just this"}}}).json()
    assert only["status"] == "FAILED" and only["error"] == "just this" and "output" not in only


def test_dict_error_fails_instead_of_completing(local_endpoint):
    c = Client(local_endpoint(ahandler))
    body = c.post("runsync", json={"input": {"return": {"error": {"code": 3}}}}).json()
    assert body["status"] == "FAILED" and json.loads(body["error"]) == {"code": 3}


def test_exception_gives_runpod_shaped_error_string(local_endpoint):
    c = Client(local_endpoint(ahandler))
    body = c.post("runsync", json={"input": {"raise": "boom"}}).json()
    assert body["status"] == "FAILED" and "output" not in body
    error = json.loads(body["error"])
    assert set(error) == {"error_type", "error_message", "error_traceback", "hostname", "worker_id", "runpod_version"}
    assert error["error_type"] == "<class 'KeyError'>"
    assert "boom" in error["error_message"] and "KeyError" in error["error_traceback"]


def test_sync_handler_exception_fails_too(local_endpoint):
    def bad(job):
        raise ZeroDivisionError("nope")

    body = Client(local_endpoint(bad)).post("runsync", json={"input": {}}).json()
    assert json.loads(body["error"])["error_type"] == "<class 'ZeroDivisionError'>"


def test_refresh_worker_is_stripped_and_empty_dict_has_no_output(local_endpoint):
    c = Client(local_endpoint(ahandler))
    body = c.post("runsync", json={"input": {"return": {"ok": True, "refresh_worker": True}}}).json()
    assert body["status"] == "COMPLETED" and body["output"] == {"ok": True}
    empty = c.post("runsync", json={"input": {"return": {}}}).json()
    assert empty["status"] == "COMPLETED" and "output" not in empty and "error" not in empty
    none = c.post("runsync", json={"input": {"return": None}}).json()
    assert none["status"] == "COMPLETED" and none["output"] is None


def test_unknown_endpoint_job_and_route_are_404_json(local_endpoint):
    ep = local_endpoint()
    c = Client(ep)
    assert c.get("status", "no-such-job").status_code == 404
    assert "not found" in c.get("status", "no-such-job").json()["error"]
    for op in ("stream", "status-sync"):
        assert c.get(op, "no-such-job").status_code == 404
    for op in ("cancel", "retry"):
        assert c.post(op, "no-such-job").status_code == 404
    other = Client(ep, "nope")
    r = other.post("run", json={"input": {}})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    assert other.get("health").status_code == 404
    r = c.get("bogus")
    assert r.status_code == 404 and "error" in r.json()


def test_wrong_method_and_bad_bodies(local_endpoint):
    c = Client(local_endpoint())
    assert c.get("run").status_code == 405
    assert c.post("health").status_code == 405
    r = c.post("run", data=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = c.post("run", json={"no_input": 1})
    assert r.status_code == 400 and "input" in r.json()["error"]
    r = c.post("run", json={"input": {}, "policy": {"executionTimeout": "soon"}})
    assert r.status_code == 400 and "executionTimeout" in r.json()["error"]


def test_non_dict_inputs_are_accepted(local_endpoint):
    c = Client(local_endpoint())
    for value in ("text", [1, 2], 3, {"k": None}):
        assert c.post("runsync", json={"input": value}).json()["output"] == value
    # echoing {} is RunPod's "empty output": COMPLETED with no output key
    assert "output" not in c.post("runsync", json={"input": {}}).json()


def test_sync_handler_does_not_block_the_server(local_endpoint):
    release = threading.Event()

    def blocking(job):
        release.wait(10)
        return "done"

    c = Client(local_endpoint(blocking, workers=4))
    ids = [c.run() for _ in range(3)]
    wait_for = [c.wait_status(i, "IN_PROGRESS") for i in ids]
    assert len(wait_for) == 3  # three blocking handlers at once, server still answering
    assert c.get("health").json()["jobs"]["inProgress"] == 3
    release.set()
    assert all(c.wait(i)["output"] == "done" for i in ids)
