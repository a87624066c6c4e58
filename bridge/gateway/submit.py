"""Submitting one job: claim it in the journal, send ``/run`` (retrying transient errors),
record the job id the moment it answers. The submit window (``/run`` sent, id not yet
recorded) is measured per submit, and a claim taken over from a delivery that lapsed inside
it is counted and logged as a possible double submission (docs/celery.md, Crash safety).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from bridge import errors
from bridge.client._policy import RetryPolicy
from bridge.gateway.journal import Journal
from bridge.gateway.poller import Cancelled
from bridge.gateway.settings import GatewaySettings
from bridge.gateway.transport import EndpointHandle, Transport
from bridge.hooks import Hooks, JobContext

if TYPE_CHECKING:
    from bridge.gateway.core import JobSpec

log = logging.getLogger("bridge.gateway")


class Submitter:
    """One per gateway: its submits, their windows and possible double submissions."""

    def __init__(self, settings: GatewaySettings, journal: Journal, transport: Transport, hooks: Hooks) -> None:
        self.settings = settings
        self.journal = journal
        self.transport = transport
        self.hooks = hooks
        self.pid = os.getpid()
        self._tokens = itertools.count()
        #: The submit window of the latest 10,000 submits: (seconds /run took to answer,
        #: seconds the job id then took to be in the journal).
        self.windows: deque[tuple[float, float]] = deque(maxlen=10_000)
        self.stats = {"possible_double_submits": 0}

    async def submit(self, spec: JobSpec, handle: EndpointHandle, call: Any, ctx: JobContext,
                     payload: Any) -> tuple[str, dict[str, Any] | None]:
        """The job id to wait on: resumed from the journal, or submitted now and recorded."""
        token = f"{self.pid}-{next(self._tokens)}"
        while True:
            action, job_id = await self.journal.claim(
                spec.task_id, spec.endpoint_id, handle.base_url, token, self.settings.submit_lease
            )
            if action == "resume" and job_id:
                ctx.job_id = job_id
                return job_id, None
            if action == "cancelled":
                raise Cancelled("revoked", None)
            if action == "takeover":
                self._possible_double(spec, handle)
                break
            if action == "claimed":
                break
            await asyncio.sleep(0.2)  # another delivery is submitting right now; it records soon
        body, sent = await self._send(spec, handle, call, ctx)
        job_id = str(body["id"])
        answered = time.monotonic()
        await self.journal.record(spec.task_id, job_id)
        # The submit window: from sending the /run that created the job to its id being in
        # the journal (the /run round trip, then the write). A worker dying inside it leaves
        # a job a redelivery cannot resume.
        self.windows.append((answered - sent, time.monotonic() - answered))
        ctx.job_id = job_id
        await self.hooks.anotify("submitted", ctx, input=payload)
        return job_id, body

    async def _send(self, spec: JobSpec, handle: EndpointHandle, call: Any,
                    ctx: JobContext) -> tuple[dict[str, Any], float]:
        """``/run``'s answer and when the request that got it was sent; transient errors are
        retried, and a submit that gives up releases its claim (nothing reached the endpoint)."""
        policy = RetryPolicy(attempts=self.settings.submit_attempts, deadline=120.0)
        first, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            sent = time.monotonic()
            try:
                return await self.transport.call(handle, call), sent
            except errors.BridgeError as exc:
                delay = policy.next_delay(attempt, exc, first)
                if delay is None:
                    await self.journal.release(spec.task_id)
                    raise
                if isinstance(exc, errors.RateLimited):
                    await self.hooks.anotify("rate_limited", ctx, route=call.route,
                                             retry_after=getattr(exc, "retry_after", None))
                await self.hooks.anotify("retried", ctx, error=exc, delay=delay)
                await asyncio.sleep(delay)

    def _possible_double(self, spec: JobSpec, handle: EndpointHandle) -> None:
        """An earlier delivery claimed this task and lapsed before recording a job id: its
        /run may have reached the endpoint. This submit repeats the same Idempotency-Key,
        which an endpoint that honours it answers with the first job; one that ignores it
        runs a second job. Counted and logged as what it is."""
        self.stats["possible_double_submits"] += 1
        log.warning(
            "bridge: %s: possible double submission to %s: an earlier delivery's claim lapsed before it "
            "recorded a job id; submitting again with the same Idempotency-Key (an endpoint that honours "
            "it returns the first job; RunPod documents no such key)", spec.task_id, handle.endpoint_id,
        )
