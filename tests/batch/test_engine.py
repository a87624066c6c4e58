"""The in-process batch API: progress, results as they complete, cancel, journal resume, pacing."""

from __future__ import annotations

import asyncio
import time

import bridge
import bridge.batch
from bridge.batch import batch
from bridge.batch.admission import Gate, Pacer, Rate
from bridge.batch.store import SqliteStore
from bridge.errors import JobRejected
from bridge.hooks import Hooks
from bridge.hookspecs import hookimpl
from bridge.plugins import make_plugin_manager

from .conftest import flaky_handler, is_failing, slow_handler, wait_until


def test_results_as_they_complete_and_in_order(local_endpoint, tmp_path):
    ep = local_endpoint(flaky_handler, endpoint_id="ep")
    handle = bridge.batch([{"x": i} for i in range(100)], "ep", base_url=ep.base_url, concurrency=10,
                   journal=str(tmp_path / "j.sqlite"))
    streamed = list(handle.as_completed(timeout=30))
    assert sorted(r.index for r in streamed) == list(range(100))
    ordered = handle.results()
    assert [r.index for r in ordered] == list(range(100))
    assert all(r.output == {"y": 2 * r.index} for r in ordered if not is_failing(r.index))
    assert [f.index for f in handle.failures()] == [i for i in range(100) if is_failing(i)]
    assert handle.failures()[0].error["error"]["error_message"] == "input 7 is bad"
    p = handle.progress()
    assert (p.total, p.done, p.failed, p.in_flight) == (100, 95, 5, 0)
    handle.close()

    # Same journal again: nothing is submitted, every result is there.
    before = ep.submissions()
    again = batch([{"x": i} for i in range(100)], "ep", base_url=ep.base_url, journal=str(tmp_path / "j.sqlite"))
    assert [r.status for r in again.results(timeout=30)] == [r.status for r in ordered]
    assert ep.submissions() == before


class Doubler:
    """A plugin: rejects negative inputs, answers x == 0 from a "cache", wraps outputs."""

    @hookimpl
    def bridge_transform_input(self, ctx, input):
        if input["x"] < 0:
            raise JobRejected("negative input", None, ctx.endpoint_id)
        return {"x": input["x"] * 2}

    @hookimpl
    def bridge_lookup(self, ctx, input):
        return {"y": "cached"} if input["x"] == 0 else None

    @hookimpl
    def bridge_transform_output(self, ctx, output):
        return {"wrapped": output, "index": ctx.meta["index"]}


def test_plugins_run_around_each_job(local_endpoint):
    ep = local_endpoint(lambda job: {"y": job["input"]["x"]}, endpoint_id="echo")
    pm = make_plugin_manager(environ={}, first_party=False, entry_points=False, extra={"doubler": Doubler()})
    handle = batch([{"x": 0}, {"x": 1}, {"x": -1}, {"x": 3}], "echo", base_url=ep.base_url, hooks=Hooks(pm))
    results = handle.results(timeout=30)
    assert results[0].output == {"wrapped": {"y": "cached"}, "index": 0} and results[0].job_id is None
    assert results[1].output == {"wrapped": {"y": 2}, "index": 1}
    assert results[2].status == "FAILED" and results[2].error["type"] == "JobRejected"
    assert results[3].output == {"wrapped": {"y": 6}, "index": 3}
    assert ep.submissions() == 2  # the cache hit and the veto sent nothing


def test_cancel_cancels_every_remote_job_and_resume_uses_fresh_keys(local_endpoint, tmp_path):
    ep = local_endpoint(slow_handler, endpoint_id="slow")
    journal = str(tmp_path / "j.sqlite")
    handle = batch([{"x": i} for i in range(25)], "slow", base_url=ep.base_url, concurrency=8, journal=journal)
    wait_until(lambda: ep.health()["jobs"]["inProgress"] == 8, 30, "8 jobs running")
    handle.cancel(timeout=30)
    results = handle.results()
    cancelled = [r for r in results if r.status == "CANCELLED"]
    assert len(cancelled) == 8 and ep.submissions() == 8
    assert all(ep.job_state(r.job_id)["status"] == "CANCELLED" for r in cancelled)
    assert handle.failures() == []  # cancelled with the batch is not a failure
    handle.close()

    store = SqliteStore(journal)
    assert {store.get(r.index).attempt for r in cancelled} == {1}  # next try: a fresh key
    store.close()


def test_pacer_never_exceeds_its_window():
    async def run() -> list[float]:
        pacer = Pacer(Rate(5, 0.2), mode="window", margin=0.0)
        sent = []
        for _ in range(17):
            await pacer.acquire()
            sent.append(time.monotonic())
        return sent

    sent = asyncio.run(run())
    for i in range(len(sent) - 5):
        assert sent[i + 5] - sent[i] >= 0.2 - 1e-3  # the 6th send is a full window after the 1st


def test_bucket_pacer_allows_a_burst_then_the_refill_rate():
    async def run() -> list[float]:
        pacer = Pacer(Rate(5, 0.25), mode="bucket")
        sent = []
        for _ in range(10):
            await pacer.acquire()
            sent.append(time.monotonic())
        return sent

    sent = asyncio.run(run())
    # Never more than the bucket holds: 5 at once, plus 20/s refill since the first send.
    for i, t in enumerate(sent):
        assert i + 1 <= 5 + (t - sent[0]) * 20 + 1e-6
    assert sent[-1] - sent[0] >= 5 / 20 - 0.01  # the 5 sends after the burst waited for refill


def test_gate_bounds_in_flight_and_queue_depth():
    async def run() -> tuple[bool, bool]:
        gate = Gate(4, max_queue_depth=2)
        await gate.enter(0)
        await gate.enter(1)
        blocked = asyncio.ensure_future(gate.enter(2))
        await asyncio.sleep(0)
        first = blocked.done()  # 2 queued: no room although 4 may be in flight
        await gate.started(0)  # job 0 left the remote queue
        await asyncio.wait_for(blocked, 1)
        return first, blocked.done()

    assert asyncio.run(run()) == (False, True)


def test_rate_parsing():
    assert Rate.parse("1000/10s") == Rate(1000, 10.0)
    assert Rate.parse((5, 1)) == Rate(5, 1.0)
    assert Rate.parse("off") is None


def test_resumed_job_that_vanished_is_run_again(local_endpoint, tmp_path):
    ep = local_endpoint(lambda job: {"y": job["input"]["x"]}, endpoint_id="echo")
    journal = str(tmp_path / "j.sqlite")
    store = SqliteStore(journal)
    store.set_meta("batch_id", "gone")
    store.submitted(0, 0, "no-such-job")  # a journal from a run whose job has since expired
    store.close()
    handle = batch([{"x": 5}], "echo", base_url=ep.base_url, journal=journal, batch_id="gone")
    [result] = handle.results(timeout=30)
    assert result.output == {"y": 5} and result.job_id != "no-such-job"
    assert ep.job_state(result.job_id)["idempotencyKey"] == "bridge-batch-gone-0-1"
