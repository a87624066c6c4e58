"""The gateway's stages (:class:`bridge.gateway.stages.GatewayStages`) around the one
lifecycle, without Redis or sockets (issue #10): a fake gateway whose journal, watches,
stream writer and webhooks are small recording fakes, the real plans and AsyncDriver over
an AsyncStubTransport. Checked: the journal's claim -> record order, resuming a recorded job,
a claim that waits or takes over, releasing the claim when a submit fails, one /cancel per
task, the checks on the input, a resumed stream, and webhooks ending the wait.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from bridge import errors
from bridge.gateway.core import JobSpec
from bridge.gateway.stages import GatewayStages, SubmitLedger
from bridge.hooks import Hooks
from bridge.lifecycle import plans
from bridge.lifecycle.drive import AsyncDriver, Control
from bridge.lifecycle.endpoint import EndpointState
from bridge.lifecycle.job import JobRequest, run_job
from bridge.lifecycle.settings import PollPolicy, RetryPolicy, WaitSettings
from bridge.lifecycle.steps import Cancelled, Delivered
from bridge.testing import AsyncStubTransport, reply
from bridge.wire import Wire

BASE = "http://127.0.0.1:9/v2"  # never connected: the stub answers
WAITS = WaitSettings(poll=PollPolicy(initial=0.01, max_interval=0.05),
                     retry=RetryPolicy(attempts=3, base=0.01, max_backoff=0.02), learn=False)
QUEUED = reply(200, {"id": "j1", "status": "IN_QUEUE"})
DONE = reply(200, {"id": "j1", "status": "COMPLETED", "output": "ok"})
_ids = itertools.count()


class FakeJournal:
    """The journal's coroutines (same contract as Journal: ``(action, job_id or None)``), answering claims from a list (the last repeats) and
    recording every call; ``cancel_once`` is True once per task, as the Redis HSETNX is."""

    def __init__(self, *claims: tuple[str, str | None]) -> None:
        self.claims = list(claims or [("claimed", None)])
        self.calls: list[tuple[Any, ...]] = []
        self.cancel_sent: set[str] = set()

    async def claim(self, task_id: str, endpoint_id: str, base_url: str, token: str, lease: float) -> tuple[str, str | None]:
        self.calls.append(("claim", task_id))
        return self.claims.pop(0) if len(self.claims) > 1 else self.claims[0]

    async def record(self, task_id: str, job_id: str) -> None:
        self.calls.append(("record", task_id, job_id))

    async def release(self, task_id: str) -> None:
        self.calls.append(("release", task_id))

    async def cancel_once(self, task_id: str) -> bool:
        first = task_id not in self.cancel_sent
        self.cancel_sent.add(task_id)
        self.calls.append(("cancel_once", task_id, first))
        return first


class FakeWatches:
    def __init__(self) -> None:
        self.watched: dict[str, Control] = {}
        self.forgotten: list[str] = []
        self.started = asyncio.Event()

    def watch(self, task_id: str, control: Control, stream: bool) -> None:
        self.watched[task_id] = control
        self.started.set()

    def forget(self, task_id: str, control: Control) -> None:
        assert self.watched.pop(task_id) is control
        self.forgotten.append(task_id)


class FakeStreams:
    def __init__(self, so_far: list[Any] | None = None) -> None:
        self.earlier = so_far or []
        self.written: list[list[Any]] = []

    async def so_far(self, task_id: str) -> list[Any]:
        return list(self.earlier)

    async def write(self, task_id: str, chunks: list[Any]) -> None:
        self.written.append(list(chunks))


class FakeWebhooks:
    fallback_after = 30.0  # long: only a delivery ends these waits in time
    fallback_interval = 30.0

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def url_for(self, task_id: str, relay: str | None = None, await_here: bool = True) -> str:
        if self.fail:
            raise ConnectionError("redis down")
        return f"http://127.0.0.1:9/webhook/{task_id}?s=per-job-secret"


@dataclass
class FakeGateway:
    journal: FakeJournal = field(default_factory=FakeJournal)
    watches: FakeWatches = field(default_factory=FakeWatches)
    streams: FakeStreams = field(default_factory=FakeStreams)
    webhooks: FakeWebhooks | None = None
    ledger: SubmitLedger = field(default_factory=SubmitLedger)
    settings: Any = field(default_factory=lambda: SimpleNamespace(submit_lease=60.0, max_input_bytes=1000))


class Recorded(GatewayStages):
    """GatewayStages that also record the events the plan reports (the observers' view)."""

    events: list[str]

    def on_event(self, name: str, ctx: Any, data: dict[str, Any]) -> None:
        self.events.append(name)


@dataclass
class Job:
    gw: FakeGateway
    stages: Recorded
    control: Control
    handle: EndpointState
    stub: AsyncStubTransport
    ctx: Any


def job(gw: FakeGateway, script: dict[str, list[Any]], stream: bool = False) -> Job:
    handle = EndpointState(Wire(f"gw-unit-{next(_ids)}-{time.monotonic_ns()}", base_url=BASE), WAITS)
    spec = JobSpec("t1", handle.endpoint_id, {"prompt": "hi"})
    control = Control()
    stages = Recorded(gw, spec, handle, stream, control)  # type: ignore[arg-type]  # fakes
    stages.events = []
    ctx = Hooks.empty().context(handle.endpoint_id, base_url=BASE, task_id="t1")
    return Job(gw, stages, control, handle, AsyncStubTransport(script), ctx)


async def drive(j: Job, input: Any = None, **request: Any) -> Any:
    """What Gateway.arun does, minus Redis: the whole job through the gateway's stages."""
    req = JobRequest({"prompt": "hi"} if input is None else input, idempotency_key="t1", cancel_on_timeout=True,
                     **request)
    driver = AsyncDriver(j.stub.send, Hooks.empty(), j.stages)
    try:
        return await driver.run(run_job(j.handle, req, j.ctx), j.control, j.stages.emit if j.stages.stream else None)
    finally:
        j.stages.done()


async def test_claim_then_submit_then_record_then_watch() -> None:
    j = job(FakeGateway(), {"run": [QUEUED], "status-sync": [DONE]})
    assert await drive(j) == "ok"
    assert j.gw.journal.calls == [("claim", "t1"), ("record", "t1", "j1")]
    assert j.stub.routes() == ["run", "status-sync"]
    assert j.stub.calls[0].headers["Idempotency-Key"] == "t1"
    assert j.gw.watches.forgotten == ["t1"] and not j.gw.watches.watched  # watched while waiting, then dropped
    [(round_trip, id_write)] = j.gw.ledger.windows  # the submit window was measured
    assert round_trip >= 0 and id_write >= 0
    assert j.stages.events == ["submitted", "status_changed", "completed"]


async def test_a_recorded_job_is_resumed_without_a_run() -> None:
    j = job(FakeGateway(FakeJournal(("resume", "j-old"))),
            {"status-sync": [reply(200, {"id": "j-old", "status": "COMPLETED", "output": 3})]})
    assert await drive(j) == 3
    assert j.gw.journal.calls == [("claim", "t1")]
    assert j.stub.routes() == ["status-sync"] and j.stub.calls[0].job_id == "j-old"
    assert "submitted" not in j.stages.events and not j.gw.ledger.windows


async def test_a_live_claim_elsewhere_is_waited_for_and_a_lapsed_one_is_taken_over() -> None:
    j = job(FakeGateway(FakeJournal(("wait", None), ("takeover", None))), {"run": [QUEUED], "status-sync": [DONE]})
    assert await drive(j) == "ok"
    assert j.gw.journal.calls == [("claim", "t1"), ("claim", "t1"), ("record", "t1", "j1")]
    assert j.gw.ledger.stats["possible_double_submits"] == 1  # counted as what it is


async def test_a_task_cancelled_before_it_submitted_sends_nothing() -> None:
    j = job(FakeGateway(FakeJournal(("cancelled", None))), {})  # any request would fail the test
    with pytest.raises(Cancelled) as info:
        await drive(j)
    assert (info.value.reason, info.value.settled) == ("revoked", True)
    assert j.stub.routes() == [] and j.gw.journal.calls == [("claim", "t1")]


@pytest.mark.parametrize(("answer", "cls", "sent"), [
    (reply(400, {"error": "bad input"}), errors.BadRequest, 1),
    (reply(503, {"error": "overloaded"}), errors.ServerError, WAITS.retry.attempts),
])
async def test_a_failed_submit_releases_the_claim(answer: Any, cls: type[errors.BridgeError], sent: int) -> None:
    j = job(FakeGateway(), {"run": [answer]})
    with pytest.raises(cls):
        await drive(j)
    assert j.stub.routes() == ["run"] * sent
    assert j.gw.journal.calls == [("claim", "t1"), ("release", "t1")]  # nothing recorded: a redelivery submits
    assert not j.gw.watches.forgotten  # the wait never began


async def test_one_cancel_per_task() -> None:
    cancelled = reply(200, {"id": "j1", "status": "CANCELLED"})
    j = job(FakeGateway(), {"run": [QUEUED], "status": [reply(200, {"id": "j1", "status": "IN_PROGRESS"})],
                            "cancel": [cancelled]})
    with pytest.raises(errors.Timeout) as info:
        await drive(j, timeout=0.1)
    assert info.value.message.endswith("; the job was cancelled")
    assert j.stub.count("cancel") == 1
    assert j.stages.events[-1] == "cancelled"
    # A later revoke of the same task (bridge.cancel_task, a soft time limit) asks again: no second /cancel.
    driver = AsyncDriver(j.stub.send, Hooks.empty(), j.stages)
    note = await driver.run(plans.cancel_quietly(j.handle._new_job("j1")))
    assert note == "; the job was cancelled"
    assert j.stub.count("cancel") == 1
    assert [c for c in j.gw.journal.calls if c[0] == "cancel_once"] == [("cancel_once", "t1", True),
                                                                         ("cancel_once", "t1", False)]


async def test_a_revoke_while_waiting_cancels_through_the_journal_once() -> None:
    j = job(FakeGateway(), {"run": [QUEUED], "status-sync": [reply(200, {"id": "j1", "status": "IN_PROGRESS"})],
                            "cancel": [reply(200, {"id": "j1", "status": "CANCELLED"})]})
    j.gw.journal.cancel_sent.add("t1")  # bridge.cancel_task already sent this task's /cancel
    running = asyncio.ensure_future(drive(j, timeout=None))
    await asyncio.wait_for(j.gw.watches.started.wait(), 5)
    j.gw.watches.watched["t1"].interrupt(Cancelled("revoked"))
    with pytest.raises(Cancelled):
        await asyncio.wait_for(running, 5)
    assert j.stub.count("cancel") == 0 and ("cancel_once", "t1", False) in j.gw.journal.calls
    assert j.stages.events[-1] == "cancelled"


@pytest.mark.parametrize(("input", "cls", "message"), [
    ({"prompt": "hi", "s3Config": {"bucket": "b"}}, errors.InvalidRequest,
     "s3Config must not travel in task arguments (they are stored and logged)"),
    ({"prompt": "x" * 2000}, errors.PayloadTooLarge, "the input is 2,013 bytes of JSON, over BRIDGE_MAX_INPUT_BYTES=1,000"),
])
async def test_inputs_the_gateway_refuses_are_not_sent(input: Any, cls: type[errors.BridgeError], message: str) -> None:
    j = job(FakeGateway(), {})
    with pytest.raises(cls) as info:
        await drive(j, input)
    assert info.value.message == message
    assert j.stub.routes() == []


async def test_a_resumed_stream_starts_from_the_chunks_already_written() -> None:
    gw = FakeGateway(FakeJournal(("resume", "j1")), streams=FakeStreams(["a"]))
    j = job(gw, {"stream": [reply(200, {"id": "j1", "status": "IN_PROGRESS", "stream": [{"output": "b"}]}),
                            reply(200, {"id": "j1", "status": "COMPLETED", "stream": []})]}, stream=True)
    assert await drive(j, stream=True) == ["a", "b"]
    assert gw.streams.written == [["b"]]  # only what this delivery read is written
    assert j.stub.routes() == ["stream", "stream"]


async def test_a_webhook_delivery_ends_the_wait_before_any_look() -> None:
    gw = FakeGateway(webhooks=FakeWebhooks())
    j = job(gw, {"run": [QUEUED]})  # a look would fail the test: the fallback looks start after 30 s
    running = asyncio.ensure_future(drive(j))
    await asyncio.wait_for(gw.watches.started.wait(), 5)
    gw.watches.watched["t1"].interrupt(Delivered({"id": "j1", "status": "COMPLETED", "output": "hooked"}))
    assert await asyncio.wait_for(running, 5) == "hooked"
    assert j.stub.routes() == ["run"]
    assert j.stub.calls[0].json["webhook"] == "http://127.0.0.1:9/webhook/t1?s=per-job-secret"


async def test_a_failed_webhook_registration_polls_as_usual() -> None:
    j = job(FakeGateway(webhooks=FakeWebhooks(fail=True)), {"run": [QUEUED], "status-sync": [DONE]})
    assert await drive(j) == "ok"
    assert j.stub.routes() == ["run", "status-sync"] and "webhook" not in j.stub.calls[0].json


async def test_a_task_revoked_before_it_submitted_is_reported_cancelled() -> None:
    j = job(FakeGateway(FakeJournal(("cancelled", None))), {})
    with pytest.raises(Cancelled):
        await drive(j)
    assert j.stages.events == ["cancelled"]


async def test_an_input_the_gateway_refuses_frees_the_claim() -> None:
    j = job(FakeGateway(), {})
    with pytest.raises(errors.InvalidRequest):
        await drive(j, {"prompt": "hi", "s3Config": {"bucket": "b"}})
    assert j.gw.journal.calls == [("claim", "t1"), ("release", "t1")]
