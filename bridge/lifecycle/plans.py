"""Requests and waits as plans (see :mod:`bridge.lifecycle.steps`): one request with
retries, one status look, waiting for a job (long polls where offered, else a schedule
learned per endpoint, or a webhook with slow fallback looks), draining a stream, cancelling.
The whole job (:mod:`bridge.lifecycle.job`) is built from these, and the clients' single
operations (``Job.fetch``, ``Job.cancel``, ...) drive them directly.

``ctx`` (a :class:`bridge.hooks.JobContext`, or None) makes a plan report what happens to
the observers: ``retried`` and ``rate_limited`` per retry, ``status_changed`` per new status.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge import errors
from bridge.job_status import is_terminal
from bridge.lifecycle.clocks import UnknownStatusClock, WaitClock
from bridge.lifecycle.endpoint import EndpointState, JobState
from bridge.lifecycle.settings import RetryPolicy
from bridge.lifecycle.steps import Attempt, Cancelled, Delivered, Emit, Event, Hook, Plan, Sleep, Stage
from bridge.wire import Call, is_known_status, terminal

log = logging.getLogger("bridge.lifecycle")


@dataclass(frozen=True)
class Deadline:
    """When a wait must end (monotonic ``at``) and how: ``"timeout"`` raises
    :class:`bridge.errors.Timeout`, ``"expired"`` raises :class:`Cancelled`; the remote job
    is cancelled first when ``cancel`` is set."""

    at: float | None
    kind: str = "timeout"
    cancel: bool = False


#: A clock for each job that has shown an unknown status, kept across waits on the job
#: (so the warning is logged once per job); made only when one is first seen.
_CLOCKS: weakref.WeakKeyDictionary[JobState, UnknownStatusClock] = weakref.WeakKeyDictionary()


def now() -> float:
    return time.monotonic()


def send(ep: EndpointState, call: Call, deadline: float | None = None, ctx: Any = None,
         policy: RetryPolicy | None = None) -> Plan[dict[str, Any]]:
    """One request, retried as ``policy`` (default: the endpoint's) says: the JSON body, or
    the bridge error."""
    policy = policy or ep.waits.retry
    started = now()
    attempt = 0
    while True:
        attempt += 1
        ep._count(call.route)
        reply = yield Attempt(call)
        if isinstance(reply, BaseException):
            error: errors.BridgeError = (reply if isinstance(reply, errors.BridgeError)
                                         else ep._wire.transport_error(call, reply))
        else:
            try:
                return ep._wire.response(call, reply.status, reply.headers, reply.body)
            except errors.EndpointError as exc:
                error = exc
        delay = policy.next_delay(attempt, error, started, deadline)
        if delay is None:
            raise error
        if ctx is not None:
            if isinstance(error, errors.RateLimited):
                yield Event("rate_limited", ctx, {"route": call.route, "retry_after": error.retry_after})
            yield Event("retried", ctx, {"error": error, "delay": delay})
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s /%s attempt %d failed (%s); retrying in %.2f s", ep.endpoint_id, call.route,
                      attempt, error, delay)
        yield Sleep(delay)


def _seen(job: JobState, body: dict[str, Any], ctx: Any, keep: bool = True) -> Plan[dict[str, Any]]:
    """Remember a status body (``keep``) and its status; tell observers when it moved."""
    status, previous = body.get("status"), job.seen_status
    if keep:
        job._remember(body)
    elif isinstance(status, str):
        job.seen_status = status
    if ctx is not None and isinstance(status, str) and status != previous:
        yield Event("status_changed", ctx, {"status": status, "previous": previous})
    return body


def fetch(job: JobState, wait: float | None, deadline: float | None = None, ctx: Any = None,
          policy: RetryPolicy | None = None) -> Plan[dict[str, Any]]:
    """One status look; with ``wait`` a long poll, falling back for good (per endpoint) to
    /status where /status-sync answers 404/405 while /status knows the job."""
    ep = job._endpoint_base
    if wait is not None and wait > 0 and ep.long_poll is not False:
        try:
            body = yield from send(ep, ep._wire.status(job.job_id, wait), deadline, ctx, policy)
        except errors.EndpointError as exc:
            if exc.status_code not in (404, 405):
                raise
            # NotFound here means the job is unknown; 200 means the route is.
            body = yield from send(ep, ep._wire.status(job.job_id), deadline, ctx, policy)
            ep.long_poll = False
        else:
            ep.long_poll = True
        return (yield from _seen(job, body, ctx))
    body = yield from send(ep, ep._wire.status(job.job_id), deadline, ctx, policy)
    return (yield from _seen(job, body, ctx))


def watch_status(job: JobState, body: Mapping[str, Any], clock: WaitClock) -> None:
    """After a non-terminal look: time an unknown status (raises UnknownStatus when it has
    lasted too long) and make the clock's next look end by then."""
    status = body.get("status")
    unknown = _CLOCKS.get(job)
    if unknown is None:
        if is_known_status(status):
            return
        unknown = _CLOCKS[job] = UnknownStatusClock(job.job_id, job.endpoint_id)
    unknown.observe(status)
    clock.until = unknown.deadline()


def _learn(job: JobState, body: Mapping[str, Any]) -> None:
    """A terminal body teaches the endpoint's profile how long its jobs take."""
    ep = job._endpoint_base
    if ep.waits.learn:
        ep.profile.observe(body, now() - job.since)


def wait(job: JobState, clock: WaitClock, deadline: Deadline, ctx: Any = None,
         fallback: tuple[float, float] | None = None) -> Plan[dict[str, Any]]:
    """Look until the job is terminal (its status body): long polls where offered, else
    plain looks on the learned schedule. ``fallback=(after, every)``: a webhook is expected
    (the driver throws :class:`Delivered`); plain looks start after ``after`` seconds and
    repeat every ``every``. Transient look errors are retried until the settings'
    ``look_error_deadline``."""
    ep = job._endpoint_base
    policy = ep.waits.look_retry
    try:
        if fallback is not None:
            yield Sleep(min(fallback[0], clock.remaining() or fallback[0]))
        elif ep.long_poll is False:
            # No long polls here: the first look waits for the schedule too (a look at once
            # mostly finds the job queued, one request per job for nothing).
            yield Sleep(clock.next_pause(None))
        while True:
            long_poll = fallback is None and ep.long_poll is not False
            hold = clock.long_poll_wait() if long_poll else None
            before, started = job.last_status, now()
            if not clock.expired():
                body = yield from fetch(job, hold, clock.deadline, ctx, policy)
                if terminal(body):
                    _learn(job, body)
                    return body
                watch_status(job, body, clock)
            if clock.expired():
                return (yield from _expire(job, clock, deadline, ctx))
            if fallback is not None:
                yield Sleep(min(fallback[1], clock.remaining() or fallback[1]))
            elif job._should_pause(hold, now() - started, before, body):
                yield Sleep(clock.next_pause(body.get("status")))
    except Delivered as delivered:
        body = delivered.body
        yield from _seen(job, body, ctx)
        _learn(job, body)
        return body


def _expire(job: JobState, clock: WaitClock, deadline: Deadline, ctx: Any) -> Plan[Any]:
    last = job.last_status
    note = (yield from cancel_quietly(job, ctx)) if deadline.cancel else ""
    if deadline.kind == "expired":
        raise Cancelled("expired", job.job_id, settled=True)
    timeout = job._timeout(clock, note, last)
    timeout.cancelled_by_us = deadline.cancel  # type: ignore[attr-defined]  # observers: cancelled, not failed
    raise timeout


def stream(job: JobState, clock: WaitClock, deadline: Deadline, ctx: Any = None,
           batches: bool = False, into: list[Any] | None = None) -> Plan[dict[str, Any]]:
    """Emit chunk outputs until the job ends, then return its terminal status body (with the
    error text of a failed job). With ``batches`` each non-empty read is emitted as one list
    (fewer wake-ups for a consumer that forwards chunks, such as the gateway). With ``ctx``
    each chunk goes through the ``transform_chunk`` hooks first; ``into`` collects them."""
    ep = job._endpoint_base
    policy = ep.waits.look_retry
    while True:
        hold = clock.long_poll_wait() if ep.long_poll is not False else None
        before, started = job.seen_status, now()
        body = yield from send(ep, ep._wire.stream(job.job_id, hold), clock.deadline, ctx, policy)
        chunks = stream_chunks(body)
        if ctx is not None:
            for i, chunk in enumerate(chunks):
                chunks[i] = yield Hook("transform_chunk", ctx, chunk)
        if into is not None:
            into.extend(chunks)
        status = body.get("status")
        if isinstance(status, str):
            yield from _seen(job, body, ctx, keep=False)
        if batches and chunks:
            yield Emit(chunks)
        elif not batches:
            for chunk in chunks:
                yield Emit(chunk)
        if isinstance(status, str) and is_terminal(status) and not chunks:
            if status in ("FAILED", "TIMED_OUT") and body.get("error") is None:
                body = yield from fetch(job, None, None, ctx)
            _learn(job, body)
            return body
        watch_status(job, body, clock)
        if chunks:
            clock.reset()
            continue  # more may be waiting: read again at once
        if clock.expired():
            return (yield from _expire(job, clock, deadline, ctx))
        if job._should_pause(hold, now() - started, before, body):
            yield Sleep(clock.next_pause())


def stream_chunks(body: Mapping[str, Any]) -> list[Any]:
    """The outputs of one /stream reply; a missing or null ``stream`` key means none."""
    chunks = body.get("stream") or []
    if not isinstance(chunks, list):
        raise errors.MalformedResponse("/stream answered a 'stream' that is not a list",
                                       body.get("id"), None)
    return [c.get("output") if isinstance(c, Mapping) else c for c in chunks]


def cancel(job: JobState, timeout: float = 3, ctx: Any = None) -> Plan[dict[str, Any]]:
    ep = job._endpoint_base
    body = yield from send(ep, ep._wire.cancel(job.job_id, timeout), None, ctx)
    if body.get("status") == "CANCELLED":
        job._remember({"id": job.job_id, **body})
    return body


def cancel_quietly(job: JobState, ctx: Any = None) -> Plan[str]:
    """Cancel on the way out (a deadline, a revoke): once per job where the caller's stages
    keep count (a Celery task's journal); a note for the error's message."""
    if not (yield Stage("may_cancel", (job.job_id,))):
        return "; the job was cancelled"
    try:
        yield from cancel(job, 3, ctx)
    except errors.BridgeError as exc:
        log.warning("bridge: /cancel of job %s failed: %s", job.job_id, exc)
        return f"; cancelling it failed: {exc.message}"
    return "; the job was cancelled"
