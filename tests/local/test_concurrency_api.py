"""Thousands of concurrent async jobs, the worker cap, the Python testing API, the runner seam."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import requests

from bridge.local.jobs import JobStore
from bridge.testing import LocalEndpoint

from .conftest import Client, wait_until

N = 2000


def test_thousands_of_async_jobs_run_at_once(local_endpoint):
    state: dict[str, Any] = {"running": 0, "peak": 0}

    async def handler(job):
        # Every job waits until all N are running at once: passes only if none is serialised.
        if "gate" not in state:
            state["gate"] = asyncio.Event()
        state["running"] += 1
        state["peak"] = max(state["peak"], state["running"])
        if state["running"] == N:
            state["gate"].set()
        await asyncio.wait_for(state["gate"].wait(), 30)
        return job["input"]

    ep = local_endpoint(handler, workers=N)

    async def drive() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
            async def run(i: int) -> str:
                async with session.post(ep.url("run"), json={"input": i}) as r:
                    return str((await r.json())["id"])

            ids = await asyncio.gather(*(run(i) for i in range(N)))

            async def wait(job_id: str) -> dict[str, Any]:
                while True:
                    async with session.get(ep.url("status-sync", job_id), params={"wait": "20000"}) as r:
                        body = await r.json()
                    if body["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                        return dict(body)

            return list(await asyncio.gather(*(wait(i) for i in ids)))

    results = asyncio.run(drive())
    assert [r["output"] for r in results] == list(range(N))
    assert {r["status"] for r in results} == {"COMPLETED"}
    assert state["peak"] == N
    assert ep.health()["jobs"]["completed"] == N


def test_workers_cap_jobs_running_at_once(local_endpoint):
    release = threading.Event()
    c = Client(local_endpoint(lambda job: release.wait(10), workers=2))
    ids = [c.run(i) for i in range(5)]
    wait_until(lambda: c.get("health").json()["jobs"]["inProgress"] == 2)
    health = c.get("health").json()
    assert health["jobs"]["inQueue"] == 3 and health["workers"]["running"] == 2
    release.set()
    assert all(c.wait(i)["status"] == "COMPLETED" for i in ids)


def test_testing_api_stats_jobs_and_bridge_routes(local_endpoint):
    ep = local_endpoint(endpoint_id="api")
    assert ep.endpoint_id == "api" and ep.base_url == f"http://127.0.0.1:{ep.port}/v2"
    c = Client(ep)
    job_id = c.run({"x": 1})
    c.wait(job_id)
    c.get("status", job_id)
    c.get("stream", job_id)
    stats = ep.stats()
    assert stats["run"] == 1 and stats["status"] == 1 and stats["stream"] == 1 and stats["status-sync"] >= 1
    assert ep.submissions() == 1
    state = ep.job_state(job_id)
    assert state is not None and state["input"] == {"x": 1} and state["endpoint_id"] == "api"
    assert ep.job_state("missing") is None
    root = ep.base_url.removesuffix("/v2")
    over_http = requests.get(f"{root}/_bridge/stats").json()
    assert over_http["requests"]["api"]["run"] == 1 and over_http["submissions"] == {"api": 1}
    assert requests.get(f"{root}/_bridge/stats", params={"endpoint": "api"}).json()["run"] == 1
    assert requests.get(f"{root}/_bridge/jobs/{job_id}").json()["status"] == "COMPLETED"
    assert requests.get(f"{root}/_bridge/jobs/nope").status_code == 404
    assert "api" in requests.get(f"{root}/_bridge/endpoints").json()
    requests.post(f"{root}/_bridge/stats/reset")
    assert ep.stats() == {}
    ep.reset_stats()


def test_several_endpoints_each_with_their_handler_and_options(local_endpoint, tmp_path, monkeypatch):
    package = tmp_path / "local_test_handlers_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("def tokens(job):\n    yield from job['input']['text'].split()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = local_endpoint(lambda job: "first")
    ep.add_endpoint("second", "examples/handlers.py:fail")
    ep.add_endpoint("third", "local_test_handlers_pkg:tokens", return_aggregate_stream=True)
    assert Client(ep).post("runsync", json={"input": {}}).json()["output"] == "first"
    failed = Client(ep, "second").post("runsync", json={"input": {"message": "m"}}).json()
    assert failed["status"] == "FAILED" and failed["error"] == "m"
    tokens = Client(ep, "third").post("runsync", json={"input": {"text": "x y"}}).json()
    assert tokens["output"] == ["x", "y"]
    assert ep.stats("second") == {"runsync": 1}


def test_context_manager_closes_the_server():
    with LocalEndpoint() as ep:
        url = ep.url("health")
        assert requests.get(url).status_code == 200
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        pass
    else:
        raise AssertionError("server still answering after close")


def test_external_runner_through_the_store_api(local_endpoint):
    """The seam issue 6 uses: no in-process runner; a custom runner drives the store."""
    ep = local_endpoint()
    ep.add_endpoint("ext", runner=False)
    store: JobStore = ep.endpoint("ext").store
    stopped: list[str] = []

    async def runner() -> None:
        while True:
            job = await store.take(timeout=5)
            if job is None:
                return
            if job.input == "give-back" and not job.attempts and "released" not in stopped:
                stopped.append("released")
                store.release(job)  # back to the head of the queue, taken again next round
                continue
            if not store.start(job):
                continue
            if job.input == "stop-me":
                store.on_stop(job, stopped.append)
                continue
            if job.input == "lost":
                assert store.time_out(job, "worker lost")
                assert not store.finish(job, output="late")  # a late result is dropped
                continue
            store.progress(job, {"half": True})
            store.add_chunk(job, "c1")
            store.finish(job, output={"ran": job.input})

    done = ep.run_in_loop(runner())
    c = Client(ep, "ext")
    assert c.post("runsync", json={"input": 1}).json()["output"] == {"ran": 1}
    job_id = c.run("stop-me")
    c.wait_status(job_id, "IN_PROGRESS")
    c.post("cancel", job_id)
    wait_until(lambda: "CANCELLED" in stopped)
    lost = c.wait(c.run("lost"))
    assert lost["status"] == "TIMED_OUT" and lost["error"] == "worker lost" and "output" not in lost
    assert c.wait(c.run("give-back"))["output"] == {"ran": "give-back"}
    assert "released" in stopped
    streamed = c.run(2)
    c.wait(streamed)
    assert c.get("stream", streamed).json()["stream"] == [{"output": "c1"}]
    ep.close()
    done.cancel()
