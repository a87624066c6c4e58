"""Real runpod generator workers: chunks flow job-stream → /stream with RunPod's drain
semantics; the final output is [] or, with return_aggregate_stream, every chunk."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import bridge
from bridge import errors
from bridge.testing import LocalEndpoint

from .conftest import make_worker_endpoint, wait_ready, worker_command

API_KEY = "local-key-for-the-stream-tests"
TOKENS = ["The", "quick", "brown", "fox"]
CHUNKS = [{"token": t, "i": i} for i, t in enumerate(TOKENS)]


@pytest.fixture(scope="module")
def stream_workers() -> Iterator[LocalEndpoint]:
    """Endpoint "gen": a sync generator; endpoint "agg": an async generator with
    return_aggregate_stream (both set in the worker file, as on RunPod). The server requires
    an API key: the workers use their own token, clients the key."""
    ep = make_worker_endpoint(worker_command("stream_handler.py"), endpoint_id="gen", api_key=API_KEY)
    try:
        ep.add_endpoint("agg", None, worker_command=worker_command("stream_handler.py", "--aggregate", "--async-gen"),
                        worker_options={"quiet": True, "stop_grace": 5.0})
        wait_ready(ep, 1, "gen")
        wait_ready(ep, 1, "agg")
        yield ep
    finally:
        ep.close()


def client(ep: LocalEndpoint, endpoint_id: str) -> bridge.Endpoint:
    return bridge.Endpoint(endpoint_id, base_url=ep.base_url, api_key=API_KEY)


def test_generator_chunks_stream_in_order_and_output_is_empty(stream_workers: LocalEndpoint) -> None:
    with client(stream_workers, "gen") as endpoint:
        job = endpoint.run({"tokens": TOKENS})
        assert list(job.stream(timeout=30)) == CHUNKS
        assert job.output(timeout=10) == []
        # Drained: a second read has no chunks left.
        assert job.fetch()["status"] == "COMPLETED"
    state = stream_workers.job_state(job.job_id)
    assert state is not None and state["chunks"] == len(TOKENS) and state["unread"] == 0


def test_aggregate_stream_output_is_every_chunk(stream_workers: LocalEndpoint) -> None:
    with client(stream_workers, "agg") as endpoint:
        assert endpoint.run_sync({"tokens": TOKENS}, timeout=30) == CHUNKS
        job = endpoint.run({"tokens": TOKENS[:2]})
        assert list(job.stream(timeout=30)) == CHUNKS[:2]
        assert job.output(timeout=10) == CHUNKS[:2]


def test_generator_exception_fails_after_the_chunks_before_it(stream_workers: LocalEndpoint) -> None:
    with client(stream_workers, "gen") as endpoint:
        job = endpoint.run({"tokens": TOKENS, "fail_at": 2})
        got = []
        with pytest.raises(errors.JobFailed) as info:
            for chunk in job.stream(timeout=30):
                got.append(chunk)
    assert got == CHUNKS[:2]
    assert "generator failed at token 2" in info.value.error


def test_yielded_error_fails_the_job_and_is_not_streamed(stream_workers: LocalEndpoint) -> None:
    with client(stream_workers, "agg") as endpoint:
        job = endpoint.run({"tokens": TOKENS, "error_at": 1})
        with pytest.raises(errors.JobFailed) as info:
            list(job.stream(timeout=30))
    assert info.value.error == "generator error at token 1"
    state = stream_workers.job_state(job.job_id)
    assert state is not None and state["chunks"] == 1
    wait_ready(stream_workers, 1, "agg")


def test_official_sdk_streams_from_a_real_generator_worker(stream_workers: LocalEndpoint,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import runpod

    monkeypatch.setattr(runpod, "endpoint_url_base", stream_workers.base_url)
    monkeypatch.setattr(runpod, "api_key", API_KEY)
    job = runpod.Endpoint("gen").run({"input": {"tokens": TOKENS}})
    assert list(job.stream()) == CHUNKS


def test_the_api_key_guards_the_public_routes_not_the_worker_routes(stream_workers: LocalEndpoint) -> None:
    import requests

    assert requests.post(stream_workers.url("run", endpoint_id="gen"), json={"input": {}}, timeout=10).status_code == 401
    # The workers took and finished every job above without the key: nothing is stuck.
    assert stream_workers.health("gen")["jobs"]["inQueue"] == 0
