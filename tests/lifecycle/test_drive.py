"""The lifecycle's drivers (issue #10), without sockets: interruptions through ``Control``
(a revoke, a webhook delivery, a hand-off) while a request or a pause is in flight, the sync
driver's ``steps()``, and the sync and async drivers doing exactly the same for one table of
scenarios. The rig (stub transports, recording plugin and stages) is test_plans.py's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge import errors
from bridge.lifecycle.drive import AsyncDriver, Control
from bridge.lifecycle.settings import PollPolicy
from bridge.lifecycle.steps import Cancelled, Delivered, HandedOff
from bridge.testing import AsyncStubTransport, reply
from bridge.transport import Reply
from bridge.wire import Call

from .test_plans import (
    OVERLOADED,
    QUEUED,
    RUNNING,
    SLOW_DOWN,
    SUBMITTED,
    WAITS,
    Result,
    Rig,
    Script,
    body,
    chunks,
    done,
    make_rig,
)

CANCELLED_BODY = reply(200, {"id": "j1", "status": "CANCELLED"})


class Gate:
    """An async send over a stub that holds the first call of ``route`` (recorded, answered,
    then held until ``release`` is set): a request in flight, for an interruption to meet."""

    def __init__(self, stub: AsyncStubTransport, route: str) -> None:
        self.stub = stub
        self.route = route
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, call: Call) -> Reply:
        answer = await self.stub.send(call)
        if call.route == self.route and not self.arrived.is_set():
            self.arrived.set()
            await self.release.wait()
        return answer


async def start(rig: Rig, stub: AsyncStubTransport, gate: Gate, **request: Any) -> tuple[asyncio.Task[Result], Control]:
    """The whole job running in a task, once ``gate``'s request is in flight."""
    control = Control()
    task = asyncio.ensure_future(rig.arun(stub, rig.plan(rig.request(**request)), control, gate.send))
    await asyncio.wait_for(gate.arrived.wait(), 5)
    return task, control


# -- interruptions ----------------------------------------------------------------------------


async def test_cancelled_while_a_look_is_in_flight_cancels_the_remote_job_once() -> None:
    rig = make_rig()
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [RUNNING], "cancel": [CANCELLED_BODY]})
    task, control = await start(rig, stub, Gate(stub, "status-sync"))
    assert control.armed and control.busy
    control.interrupt(Cancelled("revoked"))
    control.interrupt(Cancelled("expired"))  # the first interruption wins
    r = await asyncio.wait_for(task, 5)
    error = r.raised(Cancelled)
    assert (error.reason, error.job_id, error.settled) == ("revoked", "j1", True)
    assert r.routes == ["run", "status-sync", "cancel"]
    assert rig.stages.names().count("may_cancel") == 1
    assert r.events == [SUBMITTED, ("cancelled", "revoked")]


async def test_a_cancel_already_sent_for_the_job_is_not_sent_again() -> None:
    rig = make_rig()
    rig.stages.may_cancel("j1")  # the journal says: this task's one /cancel went out already
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [RUNNING]})  # a /cancel would fail
    task, control = await start(rig, stub, Gate(stub, "status-sync"))
    control.interrupt(Cancelled("revoked"))
    r = await asyncio.wait_for(task, 5)
    assert r.raised(Cancelled).reason == "revoked"
    assert r.routes == ["run", "status-sync"] and r.events == [SUBMITTED, ("cancelled", "revoked")]


async def test_a_settled_cancellation_sends_no_cancel() -> None:
    rig = make_rig()
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [RUNNING]})
    task, control = await start(rig, stub, Gate(stub, "status-sync"))
    control.interrupt(Cancelled("revoked", settled=True))
    r = await asyncio.wait_for(task, 5)
    assert r.raised(Cancelled).job_id == "j1"
    assert r.routes == ["run", "status-sync"] and "may_cancel" not in rig.stages.names()
    assert r.events == [SUBMITTED, ("cancelled", "revoked")]


async def test_cancelled_during_a_pause_between_plain_looks() -> None:
    # Pauses of 30 s and no long polls: the wait pauses before its first look (the schedule
    # places it); the job ends only because the interruption cuts that pause short.
    rig = make_rig(waits=WAITS.replace(poll=PollPolicy(long_poll=0, initial=30.0, max_interval=30.0)))
    submitted = asyncio.Event()
    stub = AsyncStubTransport({"run": [QUEUED], "status": [RUNNING], "cancel": [CANCELLED_BODY]})

    async def send(call: Call) -> Reply:
        answer = await stub.send(call)
        if call.route == "run":
            submitted.set()
        return answer

    control = Control()
    task = asyncio.ensure_future(rig.arun(stub, control=control, send=send))
    await asyncio.wait_for(submitted.wait(), 5)
    for _ in range(1000):  # what follows /run is local (stages, events): the pause comes next
        if control.busy:
            break
        await asyncio.sleep(0)
    assert control.busy
    control.interrupt(Cancelled("revoked"))
    r = await asyncio.wait_for(task, 5)
    assert r.raised(Cancelled).reason == "revoked"
    assert r.routes == ["run", "cancel"]
    assert r.events == [SUBMITTED, ("cancelled", "revoked")]


async def test_delivered_ends_the_wait_with_its_body() -> None:
    rig = make_rig()
    rig.recorder.wrap_output = True
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [RUNNING]})
    task, control = await start(rig, stub, Gate(stub, "status-sync"))
    control.interrupt(Delivered({"id": "j1", "status": "COMPLETED", "output": "from the webhook"}))
    r = await asyncio.wait_for(task, 5)
    assert r.error is None and r.value == {"wrapped": "from the webhook"}
    assert r.routes == ["run", "status-sync"]
    assert r.events == [SUBMITTED, ("status_changed", "COMPLETED", None),
                        ("completed", {"wrapped": "from the webhook"})]


async def test_a_delivered_failure_is_the_typed_error() -> None:
    rig = make_rig()
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [RUNNING]})
    task, control = await start(rig, stub, Gate(stub, "status-sync"))
    control.interrupt(Delivered({"id": "j1", "status": "FAILED", "error": "bad input"}))
    r = await asyncio.wait_for(task, 5)
    assert r.raised(errors.JobFailed).message == "job FAILED: bad input"
    assert r.events == [SUBMITTED, ("status_changed", "FAILED", None), ("failed", "JobFailed")]


async def test_handed_off_passes_through_and_leaves_the_remote_job_alone() -> None:
    rig = make_rig()
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [RUNNING]})  # a /cancel would fail
    task, control = await start(rig, stub, Gate(stub, "status-sync"))
    control.interrupt(HandedOff("task-1"))
    r = await asyncio.wait_for(task, 5)
    r.raised(HandedOff)
    assert r.routes == ["run", "status-sync"]
    assert "may_cancel" not in rig.stages.names()
    assert r.events == [SUBMITTED]  # neither failed nor cancelled: the next worker goes on


async def test_an_interruption_before_the_wait_is_held_until_it_starts() -> None:
    rig = make_rig()
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [RUNNING], "cancel": [CANCELLED_BODY]})
    gate = Gate(stub, "run")
    task, control = await start(rig, stub, gate)
    control.interrupt(Cancelled("revoked"))  # while /run is in flight: not thrown there
    assert not control.armed and not task.done()
    gate.release.set()
    r = await asyncio.wait_for(task, 5)
    assert r.raised(Cancelled).job_id == "j1"
    # /run completed and was recorded; the held revoke then met the first look, before it was sent.
    assert r.routes == ["run", "cancel"]
    assert rig.stages.names() == ["claim", "check_input", "webhook", "record", "waiting", "may_cancel"]
    assert r.events == [SUBMITTED, ("cancelled", "revoked")]


async def test_an_interruption_before_the_job_starts_still_lets_it_submit_and_record() -> None:
    # Held, not thrown at the first request: a revoke that raced the submit must leave a
    # recorded job to cancel, not a /run never sent (or sent and forgotten).
    rig = make_rig()
    stub = AsyncStubTransport({"run": [SLOW_DOWN, QUEUED], "status-sync": [RUNNING], "cancel": [CANCELLED_BODY]})
    control = Control()
    control.interrupt(Cancelled("revoked"))
    r = await asyncio.wait_for(rig.arun(stub, control=control), 5)
    assert r.raised(Cancelled).job_id == "j1"
    assert r.routes == ["run", "run", "cancel"]  # the 429's retry pause was not interrupted either
    assert r.events == [("rate_limited", "run", 0.02), ("retried", "RateLimited"), SUBMITTED,
                        ("cancelled", "revoked")]


async def test_a_caller_cancelling_the_task_is_not_an_interruption() -> None:
    rig = make_rig()
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [RUNNING]})
    gate = Gate(stub, "status-sync")
    control = Control()
    task = asyncio.ensure_future(AsyncDriver(gate.send, rig.hooks, rig.stages).run(rig.plan(), control))
    await asyncio.wait_for(gate.arrived.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stub.routes() == ["run", "status-sync"]  # nothing sent on the way out


# -- the sync driver ----------------------------------------------------------------------------

STREAM = {"run": [QUEUED], "stream": [chunks("IN_PROGRESS", "a", "b"), chunks("IN_PROGRESS", "c"),
                                      chunks("COMPLETED")]}
STREAM_FAILING = {"run": [QUEUED], "stream": [chunks("IN_PROGRESS", "a", "b"),
                                              body("FAILED", stream=[], error="handler crashed")]}


def test_the_sync_drivers_steps_yield_the_stream_batches() -> None:
    rig = make_rig()
    rig.recorder.upper_chunks = True
    r = rig.run_sync(STREAM, rig.plan(rig.request(stream=True)))
    assert r.error is None and r.value == ["A", "B", "C"]
    assert r.emitted == [["A", "B"], ["C"]]
    assert r.routes == ["run", "stream", "stream", "stream"]
    assert r.events[-1] == ("completed", ["A", "B", "C"])


def test_the_sync_drivers_steps_raise_a_failed_stream_after_its_chunks() -> None:
    rig = make_rig()
    r = rig.run_sync(STREAM_FAILING, rig.plan(rig.request(stream=True)))
    assert r.raised(errors.JobFailed).message == "job FAILED: handler crashed"
    assert r.emitted == [["a", "b"]]
    assert r.events[-1] == ("failed", "JobFailed")


# -- one table, both drivers --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    script: Script
    routes: list[str]  # what both must send (so that "the same" cannot mean "the same mistake")
    request: dict[str, Any] = field(default_factory=dict)
    plugin: dict[str, Any] = field(default_factory=dict)  # Recorder attributes
    resume: str | None = None


DOWN = errors.TransportError("connection reset", None, None)
MISSING = reply(404, {"error": "no such route"})

CASES = [
    Case("long_poll", {"run": [QUEUED], "status-sync": [RUNNING, done({"x": 1})]},
         ["run", "status-sync", "status-sync"], plugin={"wrap_output": True, "extra": {"added": 1}}),
    Case("runsync", {"runsync": [done()]}, ["runsync"], request={"runsync": 5.0}),
    Case("resumed", {"status-sync": [body("COMPLETED", "j-old", output=1)]}, ["status-sync"], resume="j-old"),
    Case("429_on_run", {"run": [SLOW_DOWN, QUEUED], "status-sync": [done()]}, ["run", "run", "status-sync"]),
    Case("429_on_look", {"run": [QUEUED], "status-sync": [SLOW_DOWN, done()]}, ["run", "status-sync", "status-sync"]),
    Case("5xx_for_a_while", {"run": [OVERLOADED, DOWN, QUEUED], "status-sync": [OVERLOADED, done()]},
         ["run", "run", "run", "status-sync", "status-sync"]),
    Case("5xx_past_attempts", {"run": [OVERLOADED]}, ["run"] * WAITS.retry.attempts),
    Case("no_long_polls", {"run": [QUEUED], "status-sync": [MISSING], "status": [RUNNING, done()]},
         ["run", "status-sync", "status", "status"]),
    Case("failed", {"run": [QUEUED], "status-sync": [body("FAILED", error="oom")]}, ["run", "status-sync"]),
    Case("timed_out", {"run": [QUEUED], "status-sync": [body("TIMED_OUT")]}, ["run", "status-sync"]),
    Case("cancelled", {"run": [QUEUED], "status-sync": [body("CANCELLED")]}, ["run", "status-sync"]),
    Case("malformed", {"run": [QUEUED], "status-sync": [reply(200, {"id": "j1"})]}, ["run", "status-sync"]),
    Case("veto", {}, [], plugin={"veto": True}),
    Case("cache_hit", {}, [], plugin={"hit": {"cached": 1}, "wrap_output": True}),
    Case("stream", STREAM, ["run", "stream", "stream", "stream"], request={"stream": True},
         plugin={"upper_chunks": True}),
    Case("stream_failing", STREAM_FAILING, ["run", "stream", "stream"], request={"stream": True}),
]


def outcome(rig: Rig, r: Result) -> dict[str, Any]:
    """Everything a caller could observe, without what differs by construction (endpoint ids)."""
    error = None if r.error is None else (type(r.error).__name__, getattr(r.error, "message", str(r.error)),
                                          getattr(r.error, "job_id", None))
    return {"value": r.value, "error": error, "emitted": r.emitted, "routes": r.routes, "events": r.events,
            "stages": rig.stages.calls, "transforms": rig.recorder.transforms, "job_id": rig.ctx.job_id}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_sync_and_async_drivers_do_the_same(case: Case) -> None:
    seen = {}
    for kind in ("sync", "async"):
        rig = make_rig(resume=case.resume)  # an endpoint of its own: nothing learned carries over
        for name, value in case.plugin.items():
            setattr(rig.recorder, name, value)
        plan = rig.plan(rig.request(**case.request))
        r = rig.run_sync(case.script, plan) if kind == "sync" else rig.run_async(case.script, plan)
        seen[kind] = outcome(rig, r)
    assert seen["sync"] == seen["async"]
    assert seen["async"]["routes"] == case.routes
