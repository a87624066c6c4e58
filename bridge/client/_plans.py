"""Every client operation as an I/O-free *plan*: a generator that yields the steps it needs
(:class:`Attempt` one HTTP exchange, :class:`Sleep`, :class:`Emit` a stream chunk to the
caller) and is sent back each attempt's :class:`Reply` or transport exception. The sync
client drives plans with ``requests`` and ``time.sleep``, the asyncio client with
``aiohttp`` and ``asyncio.sleep``; retries, long polling and its fallback, waiting,
timeouts, cancel-on-timeout, stream draining and giving up on a status outside RunPod's
set are written once, here.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge import errors
from bridge.client._base import (
    EndpointBase,
    JobBase,
    log_retry,
    long_poll_unsupported,
    needs_error_text,
    now,
    stream_chunks,
    stream_ended,
)
from bridge.client._policy import UnknownStatusClock, Waiter
from bridge.client._wire import Call, is_known_status, terminal

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """Send ``call`` once; the driver sends back a :class:`Reply` or the exception raised."""

    call: Call


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    """A stream chunk for the caller."""

    value: Any


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


Step = Attempt | Sleep | Emit
Plan = Generator[Step, Any, T]

#: A clock for each job that has shown an unknown status, kept across waits on the job
#: (so the warning is logged once per job); made only when one is first seen.
_CLOCKS: weakref.WeakKeyDictionary[JobBase, UnknownStatusClock] = weakref.WeakKeyDictionary()


def watch_status(job: JobBase, body: Mapping[str, Any], waiter: Waiter) -> None:
    """After a non-terminal look: time an unknown status (raises UnknownStatus when it has
    lasted too long) and make the waiter's next look end by then."""
    status = body.get("status")
    clock = _CLOCKS.get(job)
    if clock is None:
        if is_known_status(status):
            return
        clock = _CLOCKS[job] = UnknownStatusClock(job.job_id, job.endpoint_id)
    clock.observe(status)
    waiter.until = clock.deadline()


def send(ep: EndpointBase, call: Call, deadline: float | None = None) -> Plan[dict[str, Any]]:
    """One request with the endpoint's RetryPolicy: the JSON body, or the bridge error."""
    started = now()
    attempt = 0
    while True:
        attempt += 1
        ep._count()
        reply = yield Attempt(call)
        if isinstance(reply, Reply):
            try:
                return ep._wire.response(call, reply.status, reply.headers, reply.body)
            except errors.EndpointError as exc:
                error: errors.BridgeError = exc
        else:
            error = ep._wire.transport_error(call, reply)
        delay = ep.retry_policy.next_delay(attempt, error, started, deadline)
        if delay is None:
            raise error
        log_retry(ep.endpoint_id, call.route, attempt, error, delay)
        yield Sleep(delay)


# -- endpoint operations ---------------------------------------------------------------------


def run(ep: EndpointBase, input: Any, webhook: str | None, policy: Mapping[str, Any] | None,
        s3_config: Mapping[str, Any] | None, idempotency_key: str | None) -> Plan[JobBase]:
    body = yield from send(ep, ep._wire.run(input, webhook, policy, s3_config, idempotency_key))
    # A repeated Idempotency-Key may name a job that already ended; /run's answer then
    # lacks the output, so only a non-terminal status is kept.
    return ep._new_job(str(body["id"]), None if terminal(body) else body)


def run_sync(ep: EndpointBase, input: Any, timeout: float | None, webhook: str | None,
             policy: Mapping[str, Any] | None, s3_config: Mapping[str, Any] | None,
             idempotency_key: str | None, cancel_on_timeout: bool) -> Plan[Any]:
    waiter = Waiter(timeout, ep.poll_policy)
    if timeout is not None and timeout < 1:
        # runsync cannot hold for less than 1 s; submit and wait instead.
        job = yield from run(ep, input, webhook, policy, s3_config, idempotency_key)
        return (yield from wait(job, waiter, cancel_on_timeout))
    # The endpoint holds runsync up to the long-poll window, then we wait like output().
    hold = ep.poll_policy.long_poll if ep.poll_policy.long_poll > 0 else 90.0
    remaining = waiter.remaining()
    call = ep._wire.runsync(input, hold if remaining is None else min(hold, remaining), webhook, policy,
                            s3_config, idempotency_key)
    body = yield from send(ep, call, waiter.deadline)
    job = ep._new_job(str(body["id"]), body)
    if terminal(body):
        return job._outcome(body)
    return (yield from wait(job, waiter, cancel_on_timeout))


# -- job operations --------------------------------------------------------------------------


def fetch(job: JobBase, wait: float | None, deadline: float | None = None) -> Plan[dict[str, Any]]:
    """One status look; with ``wait`` a long poll, falling back for good to /status on an
    endpoint that answers 404/405 on /status-sync while /status knows the job."""
    ep = job._endpoint_base
    if wait is not None and wait > 0 and ep.long_poll is not False:
        try:
            body = yield from send(ep, ep._wire.status(job.job_id, wait), deadline)
        except errors.EndpointError as exc:
            if not long_poll_unsupported(exc):
                raise
            # NotFound here means the job is unknown; 200 means the route is.
            body = yield from send(ep, ep._wire.status(job.job_id), deadline)
            ep.long_poll = False
        else:
            ep.long_poll = True
        return job._remember(body)
    return job._remember((yield from send(ep, ep._wire.status(job.job_id), deadline)))


def status(job: JobBase) -> Plan[str]:
    final = job._final()
    if final is not None:
        return str(final["status"])
    return str((yield from fetch(job, None))["status"])


def output(job: JobBase, timeout: float | None, cancel_on_timeout: bool) -> Plan[Any]:
    final = job._final()
    if final is not None:
        return job._outcome(final)
    return (yield from wait(job, Waiter(timeout, job._endpoint_base.poll_policy), cancel_on_timeout))


def wait(job: JobBase, waiter: Waiter, cancel_on_timeout: bool) -> Plan[Any]:
    """Look until the job is terminal: long polls where offered, else backed-off polls."""
    ep = job._endpoint_base
    while True:
        hold = waiter.long_poll_wait() if ep.long_poll is not False else None
        before, started = job.last_status, now()
        body = yield from fetch(job, hold, waiter.deadline)
        if terminal(body):
            return job._outcome(body)
        watch_status(job, body, waiter)
        if waiter.expired():
            last = job.last_status
            note = (yield from cancel_quietly(job)) if cancel_on_timeout else ""
            raise job._timeout(waiter, note, last)
        if job._should_pause(hold, now() - started, before, body):
            yield Sleep(waiter.next_pause())


def cancel(job: JobBase, timeout: float = 3) -> Plan[dict[str, Any]]:
    ep = job._endpoint_base
    body = yield from send(ep, ep._wire.cancel(job.job_id, timeout))
    if body.get("status") == "CANCELLED":
        job._remember({"id": job.job_id, **body})
    return body


def cancel_quietly(job: JobBase) -> Plan[str]:
    """Cancel on the way out of a timeout; a note for the Timeout's message."""
    try:
        yield from cancel(job)
    except errors.BridgeError as exc:
        return f"; cancelling it failed: {exc.message}"
    return "; the job was cancelled"


def retry(job: JobBase) -> Plan[dict[str, Any]]:
    ep = job._endpoint_base
    body = yield from send(ep, ep._wire.retry(job.job_id))
    job._forget()
    return body


def stream(job: JobBase, timeout: float | None, batches: bool = False) -> Plan[None]:
    """Emit chunk outputs until the job ends: quietly on COMPLETED and CANCELLED, with the
    typed error after the last chunk on FAILED and TIMED_OUT. With ``batches`` each
    non-empty read is emitted as one list (fewer wake-ups for a consumer that forwards
    chunks, such as the gateway writing them to Redis)."""
    ep = job._endpoint_base
    waiter = Waiter(timeout, ep.poll_policy, stream=True)
    seen = job.last_status
    while True:
        hold = waiter.long_poll_wait() if ep.long_poll is not False else None
        before, started = seen, now()
        body = yield from send(ep, ep._wire.stream(job.job_id, hold), waiter.deadline)
        chunks = stream_chunks(body)
        seen = body.get("status")
        if batches and chunks:
            yield Emit(chunks)
        elif not batches:
            for chunk in chunks:
                yield Emit(chunk)
        if stream_ended(body, chunks):
            if needs_error_text(body):
                body = yield from fetch(job, None)
            if body.get("status") in ("FAILED", "TIMED_OUT"):
                job._outcome(body)
            return None
        watch_status(job, body, waiter)
        if chunks:
            waiter.reset()
            continue  # more may be waiting: read again at once
        if waiter.expired():
            raise job._timeout(waiter)
        if job._should_pause(hold, now() - started, before, body):
            yield Sleep(waiter.next_pause())
