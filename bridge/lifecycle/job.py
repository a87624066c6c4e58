"""The life of one job, written once for every caller.

::

    transform_input (a plugin may veto: JobRejected)
      -> lookup (a cache hit ends the job here: nothing is sent)
      -> claim (a job id to resume: a Celery redelivery, a batch re-run) or submit
         (/run or /runsync with the caller's Idempotency-Key) -> record the job id
      -> wait (long polls, learned schedule, webhook with fallback looks, or stream drain)
      -> outcome: the output, or the typed error of a FAILED/CANCELLED/TIMED_OUT job
      -> transform_output -> completed / failed / cancelled events

The Celery tasks (through :mod:`bridge.gateway`), ``bridge batch``, ``bridge run`` and the
clients all drive :func:`run_job` (or its halves :func:`start` and :func:`finish`); what
each adds (a Redis journal, a batch store, a webhook receiver) comes in through
:class:`~bridge.lifecycle.stages.Stages`, and how bytes move through the transport its
driver holds. Hooks and events fire at the same points for every caller.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge import errors
from bridge.lifecycle import plans
from bridge.lifecycle.clocks import WaitClock
from bridge.lifecycle.endpoint import EndpointState, JobState
from bridge.lifecycle.plans import Deadline
from bridge.lifecycle.steps import Cancelled, Emit, Event, Hook, Plan, Stage
from bridge.wire import terminal

__all__ = ["JobRequest", "finish", "run_job", "start"]

Fallback = tuple[float, float] | None
_MISS = (False, None)
T = TypeVar("T")


@dataclass
class JobRequest:
    """One job to run: what to send and how long to wait."""

    input: Any
    webhook: str | None = None
    policy: Mapping[str, Any] | None = None
    s3_config: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    #: Seconds to wait for the job (None: as long as it takes).
    timeout: float | None = None
    #: An absolute monotonic time the wait must end by (a Celery ``expires``), and what
    #: passing it first means: ``"timeout"`` (errors.Timeout) or ``"expired"`` (Cancelled).
    deadline: float | None = None
    deadline_kind: str = "timeout"
    #: Cancel the remote job when the wait runs out of time.
    cancel_on_timeout: bool = False
    #: Drain /stream, emitting transformed chunks; the result is the list of them.
    stream: bool = False
    #: Emit each read's chunks as one list (True) or one by one.
    stream_batches: bool = True
    #: Submit through /runsync, asking the endpoint to hold the answer this many seconds.
    runsync: float | None = None


def _clock(ep: EndpointState, req: JobRequest) -> tuple[WaitClock, Deadline]:
    # Only where looks are plain: a long-polled wait never asks the schedule.
    learned = ep.waits.learn and ep.long_poll is False
    schedule = ep.profile.schedule(ep.waits.poll, stream=req.stream) if learned else None
    clock = WaitClock(req.timeout, ep.waits.poll, stream=req.stream, schedule=schedule, deadline=req.deadline)
    kind = "timeout"
    if req.deadline is not None and (req.timeout is None or req.deadline <= clock.started + req.timeout):
        kind = req.deadline_kind
    return clock, Deadline(clock.deadline, kind, req.cancel_on_timeout)


def run_job(ep: EndpointState, req: JobRequest, ctx: Any) -> Plan[Any]:
    """The whole job: its (transformed) output, or the typed error."""
    return (yield from _reported(ep, ctx, _whole(ep, req, ctx)))


def start(ep: EndpointState, req: JobRequest, ctx: Any) -> Plan[JobState]:
    """Half a job, for ``Endpoint.run``: transform, lookup, submit, record; the job to wait
    on later. A lookup hit sends nothing and returns a job that is already COMPLETED with
    the found output (its id starts with ``lookup-``; :func:`finish` transforms the output)."""
    return (yield from _reported(ep, ctx, _first_half(ep, req, ctx)))


def finish(job: JobState, req: JobRequest, ctx: Any) -> Plan[Any]:
    """The other half, for ``Job.output``: wait, outcome, transform, events."""
    return (yield from _reported(job._endpoint_base, ctx, _second_half(job, req, ctx)))


def _reported(ep: EndpointState, ctx: Any, plan: Plan[T]) -> Plan[T]:
    """``plan``, telling the observers how it ended if it ended badly (see _ended_badly)."""
    try:
        return (yield from plan)
    except GeneratorExit:
        raise  # the plan was dropped (its driver gave up): nothing to report
    except BaseException as exc:
        yield from _ended_badly(ep, ctx, exc)
        raise


def _whole(ep: EndpointState, req: JobRequest, ctx: Any) -> Plan[Any]:
    clock, deadline = _clock(ep, req)
    payload = req.input if ep.plain else (yield Hook("transform_input", ctx, req.input))
    hit, cached = _MISS if ep.plain else (yield Hook("lookup", ctx, payload))
    if hit:
        return (yield from _cached(ctx, req, cached))
    job, body, fallback = yield from _submit(ep, req, ctx, payload, clock)
    return (yield from _finish(job, body, req, ctx, clock, deadline, fallback))


def _first_half(ep: EndpointState, req: JobRequest, ctx: Any) -> Plan[JobState]:
    clock, _ = _clock(ep, req)
    payload = req.input if ep.plain else (yield Hook("transform_input", ctx, req.input))
    hit, cached = _MISS if ep.plain else (yield Hook("lookup", ctx, payload))
    if hit:
        job = ep._new_job(f"lookup-{uuid.uuid4().hex[:16]}")
        job._remember({"id": job.job_id, "status": "COMPLETED", "output": cached})
        job.from_lookup = True
        return job
    job, _body, _fallback = yield from _submit(ep, req, ctx, payload, clock)
    return job


def _second_half(job: JobState, req: JobRequest, ctx: Any) -> Plan[Any]:
    clock, deadline = _clock(job._endpoint_base, req)
    clock.started = min(clock.started, job.since)  # the schedule counts from the submit
    final = job._final()
    if job.from_lookup and final is not None:
        return (yield from _cached(ctx, req, final.get("output")))
    return (yield from _finish(job, final, req, ctx, clock, deadline, None))


def _cached(ctx: Any, req: JobRequest, output: Any) -> Plan[Any]:
    if req.stream:  # stream readers must see the answer, chunk by chunk
        chunks = list(output) if isinstance(output, list) else [output]
        for i, chunk in enumerate(chunks):
            chunks[i] = yield Hook("transform_chunk", ctx, chunk)
        if chunks and req.stream_batches:
            yield Emit(chunks)
        for chunk in chunks if not req.stream_batches else ():
            yield Emit(chunk)
        output = chunks
    else:
        output = yield Hook("transform_output", ctx, output)
    yield Event("completed", ctx, {"output": output, "delay_ms": None, "execution_ms": None})
    return output


def _submit(ep: EndpointState, req: JobRequest, ctx: Any, payload: Any,
            clock: WaitClock) -> Plan[tuple[JobState, dict[str, Any] | None, Fallback]]:
    """The job to wait on: resumed (the caller's stages know its id) or submitted now."""
    plain = ep.plain
    resumed = None if plain else (yield Stage("claim", (ctx,)))
    if resumed:
        ctx.job_id = str(resumed)
        return ep._new_job(str(resumed)), None, None
    try:
        if plain:
            webhook, fallback = req.webhook, None
        else:
            yield Stage("check_input", (ctx, payload))
            webhook, fallback = yield Stage("webhook", (ctx, req.webhook, req.stream or req.runsync is not None))
        hold = req.runsync
        remaining = clock.remaining()
        if hold is not None and remaining is not None:
            hold = min(hold, remaining)
        call = ep._wire.run(payload, webhook, req.policy, req.s3_config, req.idempotency_key, wait=hold)
        sent = time.monotonic()
        body = yield from plans.send(ep, call, clock.deadline, None if plain else ctx)
    except errors.BridgeError:
        if not plain:
            yield Stage("release", (ctx,))  # nothing was created: a later delivery may submit
        raise
    job_id = str(body["id"])
    job = ep._new_job(job_id)
    job.since = sent  # the schedule counts from the submit, as the endpoint's own times do
    ctx.job_id = job_id
    if not plain:
        yield Stage("record", (ctx, job_id))
        yield Event("submitted", ctx, {"input": payload})
    # A repeated Idempotency-Key may name a job that already ended; /run's answer then
    # lacks the output, so only /runsync's terminal answer is kept.
    if not terminal(body) or req.runsync is not None:
        job._remember(body)
        job.seen_status = None  # the submit's answer is not a look: the first look reports its status
    return job, (body if job._last is not None else None), fallback


def _finish(job: JobState, body: dict[str, Any] | None, req: JobRequest, ctx: Any, clock: WaitClock,
            deadline: Deadline, fallback: Fallback) -> Plan[Any]:
    plain = job._endpoint_base.plain
    events = None if plain else ctx  # plans report to observers only where someone listens
    if not plain:
        yield Stage("waiting", (ctx, job.job_id))
    if req.stream:
        chunks: list[Any] = [] if plain else list((yield Stage("streamed", (ctx,))) or ())
        body = yield from plans.stream(job, clock, deadline, events, batches=req.stream_batches, into=chunks)
        job._outcome(body)  # FAILED / TIMED_OUT / CANCELLED: the typed error, after the chunks
        output: Any = chunks
    else:
        if body is None or not terminal(body):
            body = yield from plans.wait(job, clock, deadline, events, fallback)
        output = job._outcome(body)
        if not plain:
            output = yield Hook("transform_output", ctx, output)
    if not plain:
        yield Event("completed", ctx, {"output": output, "delay_ms": body.get("delayTime"),
                                       "execution_ms": body.get("executionTime")})
    return output


def _ended_badly(ep: EndpointState, ctx: Any, exc: BaseException) -> Plan[None]:
    """Cancel a revoked job's remote job, tell the observers how the job ended (a cancelled
    job to ``cancelled`` only: revoked, expired, cancelled at the endpoint, or timed out and
    cancelled by us), and make the error carry the job id."""
    if isinstance(exc, Cancelled):
        if exc.job_id is None and ctx.job_id:
            exc.job_id = ctx.job_id
        if not exc.settled and ctx.job_id:
            yield from plans.cancel_quietly(ep._new_job(ctx.job_id), ctx)
            exc.settled = True
        yield Event("cancelled", ctx, {"reason": exc.reason})
    elif isinstance(exc, errors.BridgeError):
        if isinstance(exc, errors.JobError):  # the endpoint's text comes from the job's output
            exc.message = yield Hook("redact", ctx, exc.message)
            exc.error = yield Hook("redact", ctx, exc.error)
        if exc.job_id is None and ctx.job_id:
            exc.job_id = ctx.job_id  # every error carries the job id once there is one
        if isinstance(exc, errors.JobCancelled):
            yield Event("cancelled", ctx, {"reason": "cancelled"})
        elif getattr(exc, "cancelled_by_us", False):
            yield Event("cancelled", ctx, {"reason": "timeout"})
        else:
            yield Event("failed", ctx, {"error": exc, "delay_ms": None, "execution_ms": None})
