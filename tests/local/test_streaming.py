"""Generator handlers: /stream drain semantics, aggregate on/off, errors, progress updates."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from bridge.local import progress_update

from .conftest import Client, wait_until


def make_gated_sync_gen(gate: threading.Event):
    def gen(job: dict[str, Any]):
        yield "a"
        yield "b"
        gate.wait(10)
        yield "c"

    return gen


def make_gated_async_gen(gate: threading.Event):
    async def agen(job: dict[str, Any]):
        yield "a"
        yield "b"
        while not gate.is_set():
            await asyncio.sleep(0.005)
        yield "c"

    return agen


@pytest.mark.parametrize("make", [make_gated_sync_gen, make_gated_async_gen], ids=["sync-gen", "async-gen"])
@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregate"])
def test_stream_drains_chunks_since_last_read(local_endpoint, make, aggregate):
    gate = threading.Event()
    c = Client(local_endpoint(make(gate), return_aggregate_stream=aggregate))
    job_id = c.run()
    wait_until(lambda: c.ep.job_state(job_id)["chunks"] == 2)
    first = c.get("stream", job_id).json()
    assert first["status"] == "IN_PROGRESS"
    assert first["stream"] == [{"output": "a"}, {"output": "b"}]
    assert c.post("stream", job_id).json()["stream"] == []  # drained; POST works too
    gate.set()
    final = c.wait(job_id)
    assert final["output"] == (["a", "b", "c"] if aggregate else [])
    rest = c.get("stream", job_id).json()
    assert rest["status"] == "COMPLETED" and rest["stream"] == [{"output": "c"}]
    again = c.get("stream", job_id).json()
    assert again["status"] == "COMPLETED" and again["stream"] == []


def test_stream_of_plain_handler_is_terminal_status_with_empty_stream(local_endpoint):
    c = Client(local_endpoint(lambda job: {"x": 1}))
    job_id = c.run()
    c.wait(job_id)
    body = c.get("stream", job_id).json()
    assert body["status"] == "COMPLETED" and body["stream"] == []


def test_stream_wait_holds_until_a_chunk(local_endpoint):
    gate = threading.Event()
    c = Client(local_endpoint(make_gated_sync_gen(gate)))
    job_id = c.run()
    wait_until(lambda: c.ep.job_state(job_id)["chunks"] == 2)
    assert len(c.get("stream", job_id, params={"wait": 5000}).json()["stream"]) == 2
    result: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: result.update(c.get("stream", job_id, params={"wait": 20000}).json()))
    poller.start()
    gate.set()
    poller.join(5)
    assert not poller.is_alive()
    assert result["stream"] in ([{"output": "c"}], [])  # the chunk, or the end if it raced ahead
    if not result["stream"]:
        assert c.get("stream", job_id).json()["stream"] == []


def test_error_chunk_fails_the_job_and_is_not_streamed(local_endpoint):
    def gen(job):
        yield 1
        yield {"error": "model exploded"}
        yield 2

    c = Client(local_endpoint(gen))
    job_id = c.run()
    body = c.wait(job_id)
    assert body["status"] == "FAILED" and body["error"] == "model exploded"
    drained = c.get("stream", job_id).json()
    assert drained["stream"] == [{"output": 1}]
    assert drained["status"] == "FAILED" and drained["error"] == "model exploded"


def test_generator_exception_fails_with_runpod_error(local_endpoint):
    async def agen(job):
        yield "x"
        raise RuntimeError("mid-stream")

    c = Client(local_endpoint(agen))
    job_id = c.run()
    body = c.wait(job_id)
    assert body["status"] == "FAILED"
    assert json.loads(body["error"])["error_message"] == "mid-stream"
    assert c.get("stream", job_id).json()["stream"] == [{"output": "x"}]


def test_runsync_of_generator_aggregates_when_asked(local_endpoint):
    def gen(job):
        yield from range(3)

    ep = local_endpoint(gen, return_aggregate_stream=True)
    ep.add_endpoint("plain", gen)
    assert Client(ep).post("runsync", json={"input": {}}).json()["output"] == [0, 1, 2]
    assert Client(ep, "plain").post("runsync", json={"input": {}}).json()["output"] == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_progress_updates_show_on_status_while_in_progress(local_endpoint, kind):
    gate = threading.Event()

    def sync_handler(job):
        progress_update(job, {"step": 1})
        gate.wait(10)
        return {"done": True}

    async def async_handler(job):
        progress_update(job, {"step": 1})
        while not gate.is_set():
            await asyncio.sleep(0.005)
        return {"done": True}

    c = Client(local_endpoint(sync_handler if kind == "sync" else async_handler))
    job_id = c.run()
    body = wait_until(lambda: (b := c.status(job_id)).get("output") and b)
    assert body["status"] == "IN_PROGRESS" and body["output"] == {"step": 1}
    gate.set()
    assert c.wait(job_id)["output"] == {"done": True}


def test_progress_update_outside_a_local_job_is_harmless():
    progress_update({"id": "not-running"}, 1)
