"""Each client operation as a plan of the one lifecycle (:mod:`bridge.lifecycle`): the sync
client drives them with its blocking transport, the asyncio client with its async one, so
only the I/O differs between the two."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge import errors
from bridge.client._base import EndpointBase, JobBase
from bridge.lifecycle import job as lifecycle
from bridge.lifecycle import plans
from bridge.lifecycle.steps import Plan

fetch = plans.fetch
cancel = plans.cancel
send = plans.send


def run(ep: EndpointBase, input: Any, webhook: str | None, policy: Mapping[str, Any] | None,
        s3_config: Mapping[str, Any] | None, idempotency_key: str | None) -> Plan[JobBase]:
    ctx = ep._context()
    req = lifecycle.JobRequest(input, webhook, policy, s3_config, idempotency_key)
    job = yield from lifecycle.start(ep, req, ctx)
    assert isinstance(job, JobBase)
    job._ctx = ctx  # output() goes on with the same context (plugins see one job)
    return job


def run_sync(ep: EndpointBase, input: Any, timeout: float | None, webhook: str | None,
             policy: Mapping[str, Any] | None, s3_config: Mapping[str, Any] | None,
             idempotency_key: str | None, cancel_on_timeout: bool) -> Plan[Any]:
    # runsync holds for at least 1 s: a shorter timeout submits and waits instead. The
    # endpoint holds runsync up to the long-poll window, then the wait goes on like output().
    hold = ep.waits.poll.long_poll if ep.waits.poll.long_poll > 0 else 90.0
    req = lifecycle.JobRequest(input, webhook, policy, s3_config, idempotency_key, timeout=timeout,
                               cancel_on_timeout=cancel_on_timeout,
                               runsync=None if timeout is not None and timeout < 1 else hold)
    return (yield from lifecycle.run_job(ep, req, ep._context()))


def status(job: JobBase) -> Plan[str]:
    final = job._final()
    if final is not None:
        return str(final["status"])
    return str((yield from plans.fetch(job, None))["status"])


def output(job: JobBase, timeout: float | None, cancel_on_timeout: bool) -> Plan[Any]:
    req = lifecycle.JobRequest(None, timeout=timeout, cancel_on_timeout=cancel_on_timeout)
    return (yield from lifecycle.finish(job, req, job._context()))


def stream(job: JobBase, timeout: float | None, batches: bool = False) -> Plan[None]:
    """Emit chunk outputs until the job ends: quietly on COMPLETED and CANCELLED, with the
    typed error after the last chunk on FAILED and TIMED_OUT."""
    req = lifecycle.JobRequest(None, timeout=timeout, stream=True, stream_batches=batches)
    try:
        yield from lifecycle.finish(job, req, job._context())
    except errors.JobCancelled:
        return


def retry(job: JobBase) -> Plan[dict[str, Any]]:
    ep = job._endpoint_base
    body = yield from plans.send(ep, ep._wire.retry(job.job_id))
    job._forget()
    return body
