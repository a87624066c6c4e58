"""Streaming through both clients: sync and async generator handlers, aggregate on and off,
how a stream ends on each terminal state, and a reply without a ``stream`` key."""

from __future__ import annotations

import uuid

import pytest

from bridge import errors
from bridge.testing import wait_until

from . import handlers


@pytest.mark.parametrize("handler", [handlers.sync_gen, handlers.async_gen], ids=["sync-gen", "async-gen"])
@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregate"])
def test_stream_yields_every_chunk_in_order(local_endpoint, client, handler, aggregate):
    local = local_endpoint(handler, return_aggregate_stream=aggregate)
    ep = client(local)
    job = ep.run({"n": 4})
    chunks = list(job.stream())
    expected = [{"i": i} for i in range(4)] if handler is handlers.sync_gen else [f"tok{i}" for i in range(4)]
    assert chunks == expected
    # The final output follows the endpoint's aggregate setting.
    assert job.output(timeout=5) == (expected if aggregate else [])


def test_chunks_arrive_before_the_job_ends(local_endpoint, client):
    local = local_endpoint(handlers.async_gen)
    ep = client(local)
    gate = f"g-{uuid.uuid4()}"
    job = ep.run({"n": 3, "gate": gate, "gate_at": 1})
    stream = iter(job.stream())
    assert next(stream) == "tok0"  # delivered while the handler waits at the gate
    assert job.fetch()["status"] == "IN_PROGRESS"
    handlers.gate(gate).set()
    assert list(stream) == ["tok1", "tok2"]


@pytest.mark.parametrize("handler", [handlers.wrap, handlers.work], ids=["sync", "async"])
def test_stream_of_a_plain_handler_ends_quietly(local_endpoint, client, handler):
    local = local_endpoint(handler)
    ep = client(local)
    job = ep.run({"x": 1})
    assert list(job.stream()) == []
    assert job.output() in ({"echo": {"x": 1}}, {"got": {"x": 1}})


@pytest.mark.parametrize("handler", [handlers.sync_gen, handlers.async_gen], ids=["sync-gen", "async-gen"])
def test_stream_raises_after_the_last_chunk_on_failure(local_endpoint, client, handler):
    local = local_endpoint(handler)
    ep = client(local)
    job = ep.run({"n": 2, "fail": True})
    seen = []
    with pytest.raises(errors.JobFailed) as info:
        for chunk in job.stream():
            seen.append(chunk)
    assert len(seen) == 2
    assert "generator broke" in info.value.error
    assert info.value.job_id == job.job_id


def test_stream_raises_timed_out(local_endpoint, client):
    local = local_endpoint(handlers.async_gen)
    ep = client(local)
    job = ep.run({"n": 1, "sleep_after": 30}, policy={"executionTimeout": 300})
    seen = []
    with pytest.raises(errors.JobTimedOut):
        for chunk in job.stream():
            seen.append(chunk)
    assert seen == ["tok0"]


def test_stream_ends_quietly_on_cancel(local_endpoint, client):
    """The SDK polls a cancelled job's stream forever."""
    local = local_endpoint(handlers.async_gen)
    ep = client(local)
    gate = f"g-{uuid.uuid4()}"
    job = ep.run({"n": 3, "gate": gate, "gate_at": 1})
    stream = iter(job.stream())
    assert next(stream) == "tok0"
    job.cancel()
    assert list(stream) == []
    wait_until(lambda: local.job_state(job.job_id)["status"] == "CANCELLED")


def test_stream_timeout(local_endpoint, client):
    local = local_endpoint(handlers.async_gen)
    ep = client(local)
    gate = f"g-{uuid.uuid4()}"
    job = ep.run({"n": 3, "gate": gate, "gate_at": 1})
    seen = []
    with pytest.raises(errors.Timeout):
        for chunk in job.stream(timeout=1.0):
            seen.append(chunk)
    assert seen == ["tok0"]
    handlers.gate(gate).set()


def test_stream_batches_group_chunks_per_read(local_endpoint, client):
    local = local_endpoint(handlers.sync_gen)
    ep = client(local)
    job = ep.run({"n": 5})
    job.output(timeout=10)  # all five chunks are waiting: one read returns them together
    assert list(job.stream_batches()) == [[{"i": i} for i in range(5)]]
