"""What a Celery task's job adds to the one lifecycle (:class:`~bridge.lifecycle.stages.Stages`):
the Redis journal (claim before submitting, resume a recorded job, record the job id the
moment ``/run`` answers, one ``/cancel`` per task), the webhook registration, the stream's
Redis entries and the registry that interrupts a revoked task's wait.

The submit window (``/run`` sent, id not yet recorded) is measured per submit, and a claim
taken over from a delivery that lapsed inside it is counted and logged as a possible double
submission (docs/celery.md, Crash safety).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from bridge import errors
from bridge.lifecycle.drive import Control
from bridge.lifecycle.stages import Stages
from bridge.lifecycle.steps import Cancelled

if TYPE_CHECKING:
    from bridge.gateway.core import Gateway, JobSpec
    from bridge.gateway.transport import EndpointHandle

log = logging.getLogger("bridge.gateway")


class SubmitLedger:
    """One per gateway: its submits' windows and possible double submissions."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._tokens = itertools.count()
        #: The submit window of the latest 10,000 submits: (seconds /run took to answer,
        #: seconds the job id then took to be in the journal).
        self.windows: deque[tuple[float, float]] = deque(maxlen=10_000)
        self.stats = {"possible_double_submits": 0}

    def token(self) -> str:
        return f"{self.pid}-{next(self._tokens)}"

    def possible_double(self, task_id: str, endpoint_id: str) -> None:
        """An earlier delivery claimed this task and lapsed before recording a job id: its
        /run may have reached the endpoint. This submit repeats the same Idempotency-Key,
        which an endpoint that honours it answers with the first job; one that ignores it
        runs a second job. Counted and logged as what it is."""
        self.stats["possible_double_submits"] += 1
        log.warning(
            "bridge: %s: possible double submission to %s: an earlier delivery's claim lapsed before it "
            "recorded a job id; submitting again with the same Idempotency-Key (an endpoint that honours "
            "it returns the first job; RunPod documents no such key)", task_id, endpoint_id,
        )


class GatewayStages(Stages):
    """The stages of one Celery task's job (one object per job)."""

    def __init__(self, gateway: Gateway, spec: JobSpec, handle: EndpointHandle, stream: bool,
                 control: Control) -> None:
        self.gw = gateway
        self.spec = spec
        self.handle = handle
        self.stream = stream
        self.control = control
        self.watching = False
        self.sent_at = 0.0

    async def claim(self, ctx: Any) -> str | None:
        """The job id to resume, or None once this delivery holds the claim to submit."""
        gw, spec = self.gw, self.spec
        token = gw.ledger.token()
        while True:
            action, job_id = await gw.journal.claim(
                spec.task_id, spec.endpoint_id, self.handle.base_url, token, gw.settings.submit_lease)
            if action == "resume" and job_id:
                return job_id
            if action == "cancelled":
                raise Cancelled("revoked", None, settled=True)
            if action == "takeover":
                gw.ledger.possible_double(spec.task_id, self.handle.endpoint_id)
                return None
            if action == "claimed":
                return None
            await asyncio.sleep(0.2)  # another delivery is submitting right now; it records soon

    def check_input(self, ctx: Any, payload: Any) -> None:
        if isinstance(payload, dict) and "s3Config" in payload:
            raise errors.InvalidRequest(
                "s3Config must not travel in task arguments (they are stored and logged)",
                None, self.spec.endpoint_id, "set BRIDGE_S3_CONFIG in the worker's environment instead",
            )
        try:
            size = len(json.dumps(payload, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError):
            return  # the wire names the problem precisely when it encodes the body
        limit = self.gw.settings.max_input_bytes
        if size > limit:
            raise errors.PayloadTooLarge(
                f"the input is {size:,} bytes of JSON, over BRIDGE_MAX_INPUT_BYTES={limit:,}",
                None, self.spec.endpoint_id,
            )

    async def webhook(self, ctx: Any, relay: str | None, excluded: bool) -> tuple[str | None, Any]:
        """With webhooks on, the job reports back to our receiver (per-job secret in the URL);
        the caller's own webhook, if any, gets the verified body relayed. Looks only as a
        fallback."""
        hooks = self.gw.webhooks
        result: tuple[str | None, Any] = (relay, None)
        if hooks is not None and not excluded:
            try:
                url = await hooks.url_for(self.spec.task_id, relay=relay, await_here=False)
                result = (url, (hooks.fallback_after, hooks.fallback_interval))
            except Exception as exc:  # Redis unreachable for the registration: poll as usual
                log.warning("bridge: webhook registration for %s failed (%s); polling instead",
                            self.spec.task_id, type(exc).__name__)
        self.sent_at = time.monotonic()
        return result

    async def release(self, ctx: Any) -> None:
        await self.gw.journal.release(self.spec.task_id)

    async def record(self, ctx: Any, job_id: str) -> None:
        answered = time.monotonic()
        await self.gw.journal.record(self.spec.task_id, job_id)
        # The submit window: from sending the /run that created the job to its id being in
        # the journal. A worker dying inside it leaves a job a redelivery cannot resume.
        self.gw.ledger.windows.append((answered - self.sent_at, time.monotonic() - answered))

    def waiting(self, ctx: Any, job_id: str) -> None:
        self.watching = True
        self.gw.watches.watch(self.spec.task_id, self.control, self.stream)

    async def streamed(self, ctx: Any) -> list[Any]:
        """Chunks an earlier delivery already drained from /stream (a resumed stream)."""
        return await self.gw.streams.so_far(self.spec.task_id)

    async def may_cancel(self, job_id: str) -> bool:
        return await self.gw.journal.cancel_once(self.spec.task_id)

    async def emit(self, chunks: list[Any]) -> None:
        await self.gw.streams.write(self.spec.task_id, chunks)

    def done(self) -> None:
        if self.watching:
            self.gw.watches.forget(self.spec.task_id, self.control)
