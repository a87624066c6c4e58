"""The one lifecycle's plans (issue #10), without sockets: the real plans of
:mod:`bridge.lifecycle.job` driven by the real :class:`AsyncDriver` over a scripted
:class:`bridge.testing.AsyncStubTransport`, with a recording plugin and recording stages.

Each test asserts the exact requests sent (routes), the outcome (output, or the error's
class and message) and the hook events, in order. Pauses are a few milliseconds
(``WAITS``), so the whole file runs in about a second. test_drive.py reuses the rig below
(the sync driver, ``Control`` interruptions, and sync/async parity).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge import errors, hookimpl
from bridge.hooks import Hooks, JobContext
from bridge.lifecycle.drive import AsyncDriver, Control, SyncDriver
from bridge.lifecycle.endpoint import EndpointState
from bridge.lifecycle.job import JobRequest, run_job
from bridge.lifecycle.settings import PollPolicy, RetryPolicy, WaitSettings
from bridge.lifecycle.stages import Stages
from bridge.lifecycle.steps import Cancelled, Plan
from bridge.plugins import make_plugin_manager
from bridge.testing import AsyncStubTransport, StubTransport, reply
from bridge.testing.stub_transport import Entry
from bridge.transport import Reply
from bridge.wire import Wire

# -- the rig ---------------------------------------------------------------------------------

#: Never connected to: the stub answers every call.
BASE = "http://127.0.0.1:9/v2"
#: The gateway's shape (long polls of 20 s), with pauses and back-offs of milliseconds.
WAITS = WaitSettings(
    poll=PollPolicy(initial=0.01, max_interval=0.05, stream_initial=0.01, stream_max_interval=0.02),
    retry=RetryPolicy(attempts=4, deadline=10.0, base=0.01, max_backoff=0.02),
    learn=False,
)
KEY = "task-key-1"
_ids = itertools.count()


def body(status: str, job: str = "j1", **more: Any) -> Reply:
    """A 200 status body."""
    return reply(200, {"id": job, "status": status, **more})


QUEUED = body("IN_QUEUE")
RUNNING = body("IN_PROGRESS")


def done(output: Any = "ok") -> Reply:
    return body("COMPLETED", output=output, delayTime=3, executionTime=5)


def chunks(status: str, *outputs: Any) -> Reply:
    """A /stream answer carrying ``outputs``."""
    return body(status, stream=[{"output": o} for o in outputs])


class Recorder:
    """A plugin recording every observer event and transform call, in order; it also plays a
    veto, a cache hit and output/chunk transforms when told to."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.transforms: list[str] = []
        self.veto = False
        self.hit: Any = None
        self.extra: dict[str, Any] = {}
        self.wrap_output = False
        self.upper_chunks = False

    @hookimpl
    def bridge_transform_input(self, ctx: JobContext, input: Any) -> Any:
        self.transforms.append("transform_input")
        if self.veto:
            raise errors.JobRejected("inputs are refused today")
        return {**input, **self.extra} if self.extra else None

    @hookimpl
    def bridge_lookup(self, ctx: JobContext, input: Any) -> Any:
        self.transforms.append("lookup")
        return self.hit

    @hookimpl
    def bridge_transform_output(self, ctx: JobContext, output: Any) -> Any:
        self.transforms.append("transform_output")
        return {"wrapped": output} if self.wrap_output else None

    @hookimpl
    def bridge_transform_chunk(self, ctx: JobContext, chunk: Any) -> Any:
        self.transforms.append("transform_chunk")
        return chunk.upper() if self.upper_chunks else None

    @hookimpl
    def bridge_on_submitted(self, ctx: JobContext, input: Any) -> None:
        self.events.append(("submitted", input))

    @hookimpl
    def bridge_on_status_changed(self, ctx: JobContext, status: str, previous: str | None) -> None:
        self.events.append(("status_changed", status, previous))

    @hookimpl
    def bridge_on_completed(self, ctx: JobContext, output: Any) -> None:
        self.events.append(("completed", output))

    @hookimpl
    def bridge_on_failed(self, ctx: JobContext, error: BaseException) -> None:
        self.events.append(("failed", type(error).__name__))

    @hookimpl
    def bridge_on_cancelled(self, ctx: JobContext, reason: str | None) -> None:
        self.events.append(("cancelled", reason))

    @hookimpl
    def bridge_on_retried(self, ctx: JobContext, error: BaseException, delay: float | None) -> None:
        self.events.append(("retried", type(error).__name__))

    @hookimpl
    def bridge_on_rate_limited(self, ctx: JobContext, route: str | None, retry_after: float | None) -> None:
        self.events.append(("rate_limited", route, retry_after))


class RecordingStages(Stages):
    """Stages that record every call (name and the arguments that matter); ``resume`` is the
    job id ``claim`` answers, ``may_cancel`` answers True once per job (as the gateway's
    journal does)."""

    def __init__(self, resume: str | None = None) -> None:
        self.resume = resume
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[str] = []
        self._cancelled: set[str] = set()

    def claim(self, ctx: Any) -> Any:
        self.calls.append(("claim",))
        return self.resume

    def check_input(self, ctx: Any, payload: Any) -> Any:
        self.calls.append(("check_input", payload))

    def webhook(self, ctx: Any, relay: str | None, excluded: bool) -> Any:
        self.calls.append(("webhook", relay, excluded))
        return relay, None

    def release(self, ctx: Any) -> Any:
        self.calls.append(("release",))

    def record(self, ctx: Any, job_id: str) -> Any:
        self.calls.append(("record", job_id))

    def waiting(self, ctx: Any, job_id: str) -> Any:
        self.calls.append(("waiting", job_id))

    def streamed(self, ctx: Any) -> Any:
        self.calls.append(("streamed",))
        return ()

    def may_cancel(self, job_id: str) -> Any:
        self.calls.append(("may_cancel", job_id))
        first = job_id not in self._cancelled
        self._cancelled.add(job_id)
        return first

    def on_event(self, name: str, ctx: Any, data: dict[str, Any]) -> Any:
        self.events.append(name)

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


Script = Mapping[str, Iterable[Entry]]


@dataclass
class Result:
    """How one plan ended and what it did."""

    value: Any = None
    error: BaseException | None = None
    emitted: list[Any] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def raised(self, cls: type[BaseException]) -> Any:
        assert isinstance(self.error, cls), f"expected {cls.__name__}, got {self.error!r} (value {self.value!r})"
        return self.error


@dataclass
class Rig:
    """One endpoint (its own id, so its learned profile is its own), a recording plugin,
    recording stages and a job context."""

    ep: EndpointState
    recorder: Recorder
    hooks: Hooks
    stages: RecordingStages
    ctx: JobContext

    def request(self, input: Any = None, **fields: Any) -> JobRequest:
        return JobRequest({"prompt": "hi"} if input is None else input, idempotency_key=KEY, **fields)

    def plan(self, req: JobRequest | None = None) -> Plan[Any]:
        return run_job(self.ep, req or self.request(), self.ctx)

    async def arun(self, stub: AsyncStubTransport, plan: Plan[Any] | None = None, control: Control | None = None,
                   send: Callable[[Any], Any] | None = None) -> Result:
        """Drive ``plan`` (default: the whole job) with the AsyncDriver over ``stub``."""
        result = Result()
        driver = AsyncDriver(send or stub.send, self.hooks, self.stages)
        try:
            result.value = await driver.run(plan or self.plan(), control, result.emitted.append)
        except BaseException as exc:  # noqa: BLE001 (the outcome under test)
            result.error = exc
        return self._done(result, stub)

    def run_async(self, script: Script, plan: Plan[Any] | None = None) -> Result:
        stub = AsyncStubTransport(script)
        return asyncio.run(self.arun(stub, plan))

    def run_sync(self, script: Script, plan: Plan[Any] | None = None) -> Result:
        """Drive ``plan`` with the SyncDriver's ``steps()`` (what it emits is collected)."""
        stub = StubTransport(script)
        result = Result()
        steps = SyncDriver(stub.send, self.hooks, self.stages).steps(plan or self.plan())
        try:
            while True:
                result.emitted.append(next(steps))
        except StopIteration as stop:
            result.value = stop.value
        except BaseException as exc:  # noqa: BLE001 (the outcome under test)
            result.error = exc
        return self._done(result, stub)

    def _done(self, result: Result, stub: AsyncStubTransport | StubTransport) -> Result:
        result.routes = stub.routes()
        result.events = list(self.recorder.events)
        # The caller's stages hear of every event the observers do, in the same order.
        assert self.stages.events == [event[0] for event in result.events]
        return result


def make_rig(waits: WaitSettings = WAITS, resume: str | None = None, endpoint_id: str | None = None) -> Rig:
    recorder = Recorder()
    pm = make_plugin_manager(environ={}, first_party=False, entry_points=False, extra={"rec": recorder})
    hooks = Hooks(pm)
    ep = EndpointState(Wire(endpoint_id or f"unit-{next(_ids)}-{time.monotonic_ns()}", base_url=BASE), waits)
    return Rig(ep, recorder, hooks, RecordingStages(resume), hooks.context(ep.endpoint_id, base_url=BASE))


@pytest.fixture
def rig() -> Rig:
    return make_rig()


SUBMITTED = ("submitted", {"prompt": "hi"})
STAGES_OF_A_SUBMIT = [("claim",), ("check_input", {"prompt": "hi"}), ("webhook", None, False), ("record", "j1"),
                      ("waiting", "j1")]


# -- completing --------------------------------------------------------------------------------


def test_completed_through_long_polls(rig: Rig) -> None:
    r = rig.run_async({"run": [QUEUED], "status-sync": [RUNNING, done({"x": 1})]})
    assert r.value == {"x": 1} and r.error is None
    assert r.routes == ["run", "status-sync", "status-sync"]
    assert r.events == [SUBMITTED, ("status_changed", "IN_PROGRESS", None),
                        ("status_changed", "COMPLETED", "IN_PROGRESS"), ("completed", {"x": 1})]
    assert rig.stages.calls == STAGES_OF_A_SUBMIT
    assert rig.recorder.transforms == ["transform_input", "lookup", "transform_output"]
    assert rig.ctx.job_id == "j1" and rig.ep.long_poll is True  # the profile learned /status-sync exists


def test_the_requests_carry_the_key_and_the_long_poll_wait() -> None:
    rig = make_rig()
    rig.recorder.extra = {"added": True}
    stub = AsyncStubTransport({"run": [QUEUED], "status-sync": [done()]})
    r = asyncio.run(rig.arun(stub))
    assert r.value == "ok"
    run, look = stub.calls
    assert run.json == {"input": {"prompt": "hi", "added": True}} and run.headers["Idempotency-Key"] == KEY
    assert look.url == f"{BASE}/{rig.ep.endpoint_id}/status-sync/j1?wait=20000" and look.job_id == "j1"
    assert r.events[0] == ("submitted", {"prompt": "hi", "added": True})  # the input as sent


def test_runsync_answering_terminal_needs_no_look(rig: Rig) -> None:
    rig.recorder.wrap_output = True
    stub = AsyncStubTransport({"runsync": [done([1, 2])]})
    r = asyncio.run(rig.arun(stub, rig.plan(rig.request(runsync=5.0))))
    assert r.value == {"wrapped": [1, 2]}
    assert r.routes == ["runsync"] and stub.calls[0].url.endswith("/runsync?wait=5000")
    assert r.events == [SUBMITTED, ("completed", {"wrapped": [1, 2]})]


def test_runsync_not_done_in_time_goes_on_waiting(rig: Rig) -> None:
    stub = AsyncStubTransport({"runsync": [RUNNING], "status-sync": [done()]})
    r = asyncio.run(rig.arun(stub, rig.plan(rig.request(runsync=5.0))))
    assert r.value == "ok"
    assert r.routes == ["runsync", "status-sync"]
    # The submit's answer is not a look: the first status seen has no previous one.
    assert r.events == [SUBMITTED, ("status_changed", "COMPLETED", None), ("completed", "ok")]


def test_a_resumed_job_sends_no_run_and_no_submitted_event() -> None:
    rig = make_rig(resume="j-old")
    r = rig.run_async({"status-sync": [body("IN_PROGRESS", "j-old"), body("COMPLETED", "j-old", output=7)]})
    assert r.value == 7
    assert r.routes == ["status-sync", "status-sync"]
    assert r.events == [("status_changed", "IN_PROGRESS", None), ("status_changed", "COMPLETED", "IN_PROGRESS"),
                        ("completed", 7)]
    assert rig.stages.calls == [("claim",), ("waiting", "j-old")]  # nothing checked, nothing recorded
    assert rig.ctx.job_id == "j-old"


# -- retrying ----------------------------------------------------------------------------------

SLOW_DOWN = reply(429, {"error": "slow down"}, {"Retry-After": "0.02"})
OVERLOADED = reply(503, {"error": "overloaded"})


def test_a_429_on_run_is_retried_after_retry_after(rig: Rig) -> None:
    r = rig.run_async({"run": [SLOW_DOWN, QUEUED], "status-sync": [done()]})
    assert r.value == "ok"
    assert r.routes == ["run", "run", "status-sync"]
    assert r.events == [("rate_limited", "run", 0.02), ("retried", "RateLimited"), SUBMITTED,
                        ("status_changed", "COMPLETED", None), ("completed", "ok")]
    assert rig.ep.requests == {"run": 2, "status-sync": 1}


def test_a_429_on_a_status_look_is_retried(rig: Rig) -> None:
    r = rig.run_async({"run": [QUEUED], "status-sync": [SLOW_DOWN, done()]})
    assert r.value == "ok"
    assert r.routes == ["run", "status-sync", "status-sync"]
    assert r.events == [SUBMITTED, ("rate_limited", "status-sync", 0.02), ("retried", "RateLimited"),
                        ("status_changed", "COMPLETED", None), ("completed", "ok")]


def test_5xx_and_a_dropped_connection_for_a_while_then_success(rig: Rig) -> None:
    down = errors.TransportError("connection reset", None, rig.ep.endpoint_id)
    r = rig.run_async({"run": [OVERLOADED, down, QUEUED], "status-sync": [OVERLOADED, OVERLOADED, done()]})
    assert r.value == "ok"
    assert r.routes == ["run"] * 3 + ["status-sync"] * 3
    assert r.events == [("retried", "ServerError"), ("retried", "TransportError"), SUBMITTED,
                        ("retried", "ServerError"), ("retried", "ServerError"),
                        ("status_changed", "COMPLETED", None), ("completed", "ok")]


def test_5xx_past_the_retry_attempts_is_a_server_error_and_frees_the_claim(rig: Rig) -> None:
    r = rig.run_async({"run": [reply(500, {"error": "boom"})]})
    error = r.raised(errors.ServerError)
    assert error.message == 'POST /run answered HTTP 500: {"error": "boom"}'
    assert error.status_code == 500 and error.endpoint_id == rig.ep.endpoint_id and error.job_id is None
    assert r.routes == ["run"] * WAITS.retry.attempts
    assert r.events == [("retried", "ServerError")] * (WAITS.retry.attempts - 1) + [("failed", "ServerError")]
    assert rig.stages.names() == ["claim", "check_input", "webhook", "release"]  # never recorded


def test_a_failing_status_look_is_given_up_after_the_look_error_deadline() -> None:
    retry = RetryPolicy(attempts=2, base=0.01, max_backoff=0.02)
    rig = make_rig(waits=WaitSettings(poll=WAITS.poll, retry=retry, look_error_deadline=0.3, learn=False))
    r = rig.run_async({"run": [QUEUED], "status-sync": [OVERLOADED]})
    error = r.raised(errors.ServerError)
    assert error.message == 'GET /status-sync answered HTTP 503: {"error": "overloaded"}' and error.job_id == "j1"
    looks = r.routes[1:]
    # Looks are not bounded by the attempts of other requests, only by the deadline.
    assert r.routes[0] == "run" and set(looks) == {"status-sync"} and len(looks) > retry.attempts
    assert r.events[-1] == ("failed", "ServerError") and set(r.events[1:-1]) == {("retried", "ServerError")}


# -- servers without long polls ----------------------------------------------------------------


def test_status_sync_404_means_plain_looks_from_then_on_for_every_job_of_the_endpoint(rig: Rig) -> None:
    missing = reply(404, {"error": "no such route"})
    first = rig.run_async({"run": [QUEUED], "status-sync": [missing], "status": [RUNNING, done()]})
    assert first.value == "ok"
    assert first.routes == ["run", "status-sync", "status", "status"]
    assert first.events == [SUBMITTED, ("status_changed", "IN_PROGRESS", None),
                            ("status_changed", "COMPLETED", "IN_PROGRESS"), ("completed", "ok")]
    assert rig.ep.long_poll is False and rig.ep.profile.long_poll is False

    # Another caller of the same endpoint (a new EndpointState) shares the learned profile.
    again = make_rig(endpoint_id=rig.ep.endpoint_id)
    second = again.run_async({"run": [QUEUED], "status": [RUNNING, done()]})  # a /status-sync would fail
    assert second.value == "ok" and second.routes == ["run", "status", "status"]


def test_status_sync_404_with_status_404_is_an_unknown_job_not_a_missing_route(rig: Rig) -> None:
    gone = reply(404, {"error": "job not found"})
    r = rig.run_async({"run": [QUEUED], "status-sync": [gone], "status": [gone]})
    error = r.raised(errors.NotFound)
    assert error.message == 'GET /status answered HTTP 404: {"error": "job not found"}' and error.job_id == "j1"
    assert r.routes == ["run", "status-sync", "status"]
    assert rig.ep.long_poll is None  # not learned either way
    assert r.events == [SUBMITTED, ("failed", "NotFound")]


def test_long_polls_turned_off_look_plainly_from_the_start() -> None:
    rig = make_rig(waits=WAITS.replace(poll=PollPolicy(long_poll=0, initial=0.01)))
    r = rig.run_async({"run": [QUEUED], "status": [RUNNING, RUNNING, done()]})
    assert r.value == "ok" and r.routes == ["run", "status", "status", "status"]


# -- how a job ends ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "cls", "message", "event"), [
    ("FAILED", errors.JobFailed, "job FAILED: CUDA out of memory", ("failed", "JobFailed")),
    ("TIMED_OUT", errors.JobTimedOut, "job TIMED_OUT: CUDA out of memory", ("failed", "JobTimedOut")),
    ("CANCELLED", errors.JobCancelled, "job CANCELLED: CUDA out of memory", ("cancelled", "cancelled")),
])
def test_a_failed_terminal_status_is_its_typed_error(rig: Rig, status: str, cls: type[errors.JobError],
                                                     message: str, event: tuple[str, str]) -> None:
    r = rig.run_async({"run": [QUEUED], "status-sync": [RUNNING, body(status, error="CUDA out of memory")]})
    error = r.raised(cls)
    assert (error.message, error.job_id, error.endpoint_id) == (message, "j1", rig.ep.endpoint_id)
    assert error.error == "CUDA out of memory"
    assert r.routes == ["run", "status-sync", "status-sync"]
    assert r.events == [SUBMITTED, ("status_changed", "IN_PROGRESS", None),
                        ("status_changed", status, "IN_PROGRESS"), event]
    assert "may_cancel" not in rig.stages.names()  # the job ended by itself: nothing to cancel


def test_a_malformed_status_body_fails_the_job(rig: Rig) -> None:
    r = rig.run_async({"run": [QUEUED], "status-sync": [reply(200, {"id": "j1"})]})
    error = r.raised(errors.MalformedResponse)
    assert error.message == '/status-sync answered without the id/status fields: \'{"id": "j1"}\''
    assert r.routes == ["run", "status-sync"] and r.events == [SUBMITTED, ("failed", "MalformedResponse")]


# -- before anything is sent -------------------------------------------------------------------


def test_a_veto_sends_nothing(rig: Rig) -> None:
    rig.recorder.veto = True
    r = rig.run_async({})  # any request would fail the test: the stub has no script
    error = r.raised(errors.JobRejected)
    assert error.message == "plugin 'rec': inputs are refused today" and error.job_id is None
    assert r.routes == [] and rig.stages.calls == []
    assert r.events == [("failed", "JobRejected")]
    assert rig.recorder.transforms == ["transform_input"]


def test_a_lookup_hit_sends_nothing(rig: Rig) -> None:
    rig.recorder.hit = {"cached": True}
    rig.recorder.wrap_output = True
    r = rig.run_async({})
    assert r.value == {"wrapped": {"cached": True}}
    assert r.routes == [] and rig.stages.calls == []
    assert r.events == [("completed", {"wrapped": {"cached": True}})]
    assert rig.recorder.transforms == ["transform_input", "lookup", "transform_output"]


def test_an_input_the_stages_refuse_sends_nothing(rig: Rig) -> None:
    def refuse(ctx: Any, payload: Any) -> None:
        raise errors.PayloadTooLarge("the input is too big", None, rig.ep.endpoint_id)

    rig.stages.check_input = refuse  # type: ignore[method-assign]
    r = rig.run_async({})
    assert r.raised(errors.PayloadTooLarge).message == "the input is too big"
    assert r.routes == [] and r.events == [("failed", "PayloadTooLarge")]


# -- deadlines ---------------------------------------------------------------------------------

CANCELLED_BODY = reply(200, {"id": "j1", "status": "CANCELLED"})


def test_a_deadline_with_cancel_on_timeout_cancels_once_and_raises_timeout(rig: Rig) -> None:
    stub = AsyncStubTransport({"run": [QUEUED], "status": [RUNNING], "cancel": [CANCELLED_BODY]})
    r = asyncio.run(rig.arun(stub, rig.plan(rig.request(timeout=0.2, cancel_on_timeout=True))))
    error = r.raised(errors.Timeout)
    assert error.message == "job not finished after 0.2 s (last status IN_PROGRESS); the job was cancelled"
    assert error.job_id == "j1" and error.timeout == 0.2
    # Under a second left, a long poll is pointless: plain looks, then one /cancel.
    assert r.routes[0] == "run" and r.routes[-1] == "cancel" and set(r.routes[1:-1]) == {"status"}
    assert stub.calls[-1].url == f"{BASE}/{rig.ep.endpoint_id}/cancel/j1"
    assert r.events == [SUBMITTED, ("status_changed", "IN_PROGRESS", None), ("cancelled", "timeout")]
    assert rig.stages.names().count("may_cancel") == 1


def test_a_deadline_without_cancel_leaves_the_job_running(rig: Rig) -> None:
    stub = AsyncStubTransport({"run": [QUEUED], "status": [RUNNING]})
    r = asyncio.run(rig.arun(stub, rig.plan(rig.request(timeout=0.1))))
    error = r.raised(errors.Timeout)
    assert error.message == "job not finished after 0.1 s (last status IN_PROGRESS)"
    assert "cancel" not in r.routes and "may_cancel" not in rig.stages.names()
    assert r.events == [SUBMITTED, ("status_changed", "IN_PROGRESS", None), ("failed", "Timeout")]


def test_an_expired_deadline_cancels_and_raises_cancelled_expired(rig: Rig) -> None:
    stub = AsyncStubTransport({"run": [QUEUED], "status": [RUNNING], "cancel": [CANCELLED_BODY]})
    req = rig.request(deadline=time.monotonic() + 0.2, deadline_kind="expired", cancel_on_timeout=True)
    r = asyncio.run(rig.arun(stub, rig.plan(req)))
    error = r.raised(Cancelled)
    assert (error.reason, error.job_id, error.settled) == ("expired", "j1", True)
    assert r.routes[-1] == "cancel" and r.routes.count("cancel") == 1
    assert r.events == [SUBMITTED, ("status_changed", "IN_PROGRESS", None), ("cancelled", "expired")]


def test_a_failed_cancel_on_timeout_says_so(rig: Rig) -> None:
    stub = AsyncStubTransport({"run": [QUEUED], "status": [RUNNING], "cancel": [reply(400, {"error": "no"})]})
    r = asyncio.run(rig.arun(stub, rig.plan(rig.request(timeout=0.1, cancel_on_timeout=True))))
    error = r.raised(errors.Timeout)
    assert error.message == ('job not finished after 0.1 s (last status IN_PROGRESS); cancelling it failed: '
                             'POST /cancel answered HTTP 400: {"error": "no"}')
    assert r.routes.count("cancel") == 1


# -- unknown statuses --------------------------------------------------------------------------


def test_an_unknown_status_past_its_limit_is_unknown_status(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "0.1")
    r = rig.run_async({"run": [QUEUED], "status-sync": [body("WARMING_UP")], "status": [body("WARMING_UP")]})
    error = r.raised(errors.UnknownStatus)
    assert error.message == ("the job reported status 'WARMING_UP', which is not one of RunPod's, for 0.1 s; "
                             "stopped waiting (the job was not cancelled)")
    assert error.job_id == "j1"
    # The first look is a long poll; then the unknown status's limit (< 1 s away) bounds them.
    assert r.routes[:2] == ["run", "status-sync"] and set(r.routes[2:]) == {"status"} and "cancel" not in r.routes
    assert r.events == [SUBMITTED, ("status_changed", "WARMING_UP", None), ("failed", "UnknownStatus")]


def test_an_unknown_status_that_turns_known_is_waited_through(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "30")
    r = rig.run_async({"run": [QUEUED], "status-sync": [body("WARMING_UP"), RUNNING, done()]})
    assert r.value == "ok" and r.routes == ["run"] + ["status-sync"] * 3


# -- streams -----------------------------------------------------------------------------------


def test_a_stream_emits_transformed_chunks_in_batches(rig: Rig) -> None:
    rig.recorder.upper_chunks = True
    stub = AsyncStubTransport({"run": [QUEUED], "stream": [
        chunks("IN_PROGRESS", "a", "b"), chunks("IN_PROGRESS"), chunks("IN_PROGRESS", "c"), chunks("COMPLETED")]})
    r = asyncio.run(rig.arun(stub, rig.plan(rig.request(stream=True))))
    assert r.error is None and r.value == ["A", "B", "C"]
    assert r.emitted == [["A", "B"], ["C"]]  # one batch per read that had chunks
    assert r.routes == ["run"] + ["stream"] * 4
    assert stub.calls[1].url.endswith("/stream/j1?wait=20000")
    assert rig.recorder.transforms == ["transform_input", "lookup"] + ["transform_chunk"] * 3
    assert r.events == [SUBMITTED, ("status_changed", "IN_PROGRESS", None),
                        ("status_changed", "COMPLETED", "IN_PROGRESS"), ("completed", ["A", "B", "C"])]
    assert rig.stages.names()[-2:] == ["waiting", "streamed"]


def test_a_stream_that_fails_after_chunks_raises_after_them(rig: Rig) -> None:
    stub = AsyncStubTransport({"run": [QUEUED], "stream": [
        chunks("IN_PROGRESS", "a", "b"), body("FAILED", stream=[], error="handler crashed")]})
    r = asyncio.run(rig.arun(stub, rig.plan(rig.request(stream=True))))
    assert r.raised(errors.JobFailed).message == "job FAILED: handler crashed"
    assert r.emitted == [["a", "b"]]
    assert r.routes == ["run", "stream", "stream"]  # the error text came with the stream's answer
    assert r.events == [SUBMITTED, ("status_changed", "IN_PROGRESS", None),
                        ("status_changed", "FAILED", "IN_PROGRESS"), ("failed", "JobFailed")]


def test_a_stream_failed_without_error_text_looks_it_up(rig: Rig) -> None:
    stub = AsyncStubTransport({"run": [QUEUED], "stream": [chunks("IN_PROGRESS", "a"), chunks("FAILED")],
                               "status": [body("FAILED", error="the worker died")]})
    r = asyncio.run(rig.arun(stub, rig.plan(rig.request(stream=True))))
    assert r.raised(errors.JobFailed).message == "job FAILED: the worker died"
    assert r.emitted == [["a"]] and r.routes == ["run", "stream", "stream", "status"]
