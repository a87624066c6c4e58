"""The gateway: a Celery task's job run through the one lifecycle (:mod:`bridge.lifecycle`),
with what a worker adds (:mod:`bridge.gateway.stages`: the Redis journal, webhooks, the
stream's Redis entries; :mod:`bridge.gateway.watches`: cancel keys and hand-off; the
endpoints' shared budgets in :mod:`bridge.gateway.transport`). One event-loop thread per
process and no Celery here, so the Celery tasks, the batch runner and tests all drive it
the same way.

Callers on any thread use the sync methods (:meth:`Gateway.run`, ...). The work runs as
coroutines on the process's gateway loop; the calling thread only blocks on the result, so
10,000 waiting callers cost 10,000 blocked threads (or one each of whatever the caller
uses) and 10,000 small plans on one loop, not 10,000 polling loops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridge import errors
from bridge import webhooks as bridge_webhooks
from bridge.gateway.journal import Journal
from bridge.gateway.settings import GatewaySettings
from bridge.gateway.stages import GatewayStages, SubmitLedger
from bridge.gateway.stream_writer import StreamWriter
from bridge.gateway.transport import EndpointHandle, Transport
from bridge.gateway.watches import Watches
from bridge.hooks import Hooks, JobContext
from bridge.lifecycle import plans
from bridge.lifecycle.drive import AsyncDriver, Control
from bridge.lifecycle.job import JobRequest, run_job
from bridge.lifecycle.stages import Stages
from bridge.lifecycle.steps import Cancelled, HandedOff, Plan
from bridge.per_process import PerProcess
from bridge.redis_clients import riding_async_client

T = TypeVar("T")
log = logging.getLogger("bridge.gateway")

__all__ = ["Cancelled", "Gateway", "HandedOff", "JobSpec", "get_gateway"]


@dataclass
class JobSpec:
    """One job as the gateway sees it. ``task_id`` is the journal key and Idempotency-Key."""

    task_id: str
    endpoint_id: str
    input: Any
    policy: dict[str, Any] | None = None
    webhook: str | None = None
    timeout: float | None = None  # bridge's own deadline, seconds from start: cancel + Timeout
    expires_at: float | None = None  # epoch seconds (Celery ``expires``): cancel + Cancelled
    attempt: int = 0
    base_url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Gateway:
    """One per process (see :func:`get_gateway`); owns the loop thread, Redis, HTTP, the watches."""

    def __init__(self, settings: GatewaySettings | None = None, hooks: Hooks | None = None) -> None:
        self.settings = settings or GatewaySettings()
        self.hooks = hooks if hooks is not None else Hooks.from_settings()
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="bridge-gateway", daemon=True)
        self._thread.start()
        ready.wait()

    # -- the loop thread ------------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        # Every command rides a Redis restart or failover (BRIDGE_REDIS_OUTAGE): waits go on
        # meanwhile and their outcomes are recorded once Redis is back.
        self.redis = riding_async_client(self.settings.redis_url, max_connections=64)
        self.journal = Journal(self.redis, self.settings.journal_ttl)
        self.transport = Transport(self.settings, self.redis)
        self.streams = StreamWriter(self.redis, self.settings.stream_maxlen, self.settings.journal_ttl)
        self.watches = Watches(self.redis, self.settings.cancel_check)
        self.ledger = SubmitLedger()
        # Webhooks (BRIDGE_WEBHOOK_URL set): one waiter per process, its inbox listener runs
        # on this loop and ends the wait of the task a verified delivery names.
        self.webhooks = bridge_webhooks.from_settings(self.settings.redis_url)
        if self.webhooks is not None:
            self.webhooks.on_delivery = self.watches.deliver
        self.loop.call_soon(self.watches.start)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    @property
    def submit_windows(self) -> deque[tuple[float, float]]:
        """(``/run`` round trip, job id write) in seconds, the latest 10,000 submits."""
        return self.ledger.windows

    @property
    def stats(self) -> dict[str, int]:
        """``possible_double_submits``: claims taken over inside the submit window."""
        return self.ledger.stats

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the gateway loop and block this thread until it ends.

        If this thread is interrupted (SystemExit from a terminate, a soft time limit), the
        coroutine is cancelled too and the exception goes on; the remote job is left alone
        here (the worker's revoke handling or the caller decides about /cancel)."""
        # A bare lock as the waiter (one futex per hand-off) instead of run_coroutine_threadsafe's
        # Future/Condition chain: the hand-offs between threads dominate a short job's cost.
        done = threading.Lock()
        done.acquire()
        box: list[Any] = []
        task_box: list[asyncio.Task[T]] = []

        def finished(task: asyncio.Task[T]) -> None:
            box.append(task)
            done.release()

        def start() -> None:
            task = self.loop.create_task(coro)
            task_box.append(task)
            task.add_done_callback(finished)

        self.loop.call_soon_threadsafe(start)
        try:
            done.acquire()
        except BaseException:
            self.loop.call_soon_threadsafe(lambda: task_box and task_box[0].cancel())
            raise
        task = box[0]
        if task.cancelled():
            raise asyncio.CancelledError()
        exc = task.exception()
        if exc is not None:
            raise exc
        return task.result()

    def spawn(self, coro: Coroutine[Any, Any, T], on_done: Callable[[asyncio.Task[T]], None]) -> None:
        """Run ``coro`` on the gateway loop without waiting for it (any thread);
        ``on_done(task)`` is called on the loop thread when it ends. Held job tasks use this:
        no thread blocks while their remote job runs."""
        def start() -> None:
            self.loop.create_task(coro).add_done_callback(on_done)

        self.loop.call_soon_threadsafe(start)

    def close(self) -> None:
        async def _close() -> None:
            if self.webhooks is not None:
                await self.webhooks.close()
            await self.transport.close()
            await self.redis.aclose()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(_close(), self.loop).result(5)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(5)

    # -- sync API (any thread) --------------------------------------------------------------------

    def run(self, spec: JobSpec) -> Any:
        """Submit (or resume) ``spec``'s job, wait, and return its transformed output."""
        return self.call(self.arun(spec))

    def stream(self, spec: JobSpec) -> list[Any]:
        """Like :meth:`run`, publishing chunks to ``bridge:stream:{task_id}``; returns them all."""
        return self.call(self.arun(spec, stream=True))

    def run_sync(self, spec: JobSpec, wait: float = 90.0) -> Any:
        """Through ``/runsync`` (short jobs); falls back to polling if not done within ``wait``."""
        return self.call(self.arun(spec, runsync_wait=wait))

    def status(self, job_id: str, endpoint_id: str) -> dict[str, Any]:
        # Endpoints echo the webhook URL in status bodies: never return its secret.
        return bridge_webhooks.strip_body(self.call(self._one(endpoint_id, lambda h: h.wire.status(job_id))))

    def cancel(self, job_id: str, endpoint_id: str) -> dict[str, Any]:
        return self.call(self._one(endpoint_id, lambda h: h.wire.cancel(job_id)))

    def purge_queue(self, endpoint_id: str) -> dict[str, Any]:
        return self.call(self._one(endpoint_id, lambda h: h.wire.purge_queue()))

    def health(self, endpoint_id: str) -> dict[str, Any]:
        return self.call(self._one(endpoint_id, lambda h: h.wire.health()))

    def handoff(self) -> None:
        """Warm shutdown: every waiting call raises HandedOff; remote jobs keep running."""
        self.loop.call_soon_threadsafe(self.watches.handoff)

    def set_handoff_key(self, key: str | None) -> None:
        self.watches.handoff_key = key

    def cancel_job_of(self, task_id: str) -> bool:
        """POST /cancel for the job ``task_id`` recorded (once per task); False when none."""
        return self.call(self._cancel_recorded(task_id))

    def journal_entry(self, task_id: str) -> dict[str, str]:
        return self.call(self.journal.get(task_id))

    # -- the job ----------------------------------------------------------------------------------

    def _driver(self, handle: EndpointHandle, stages: Stages | None = None) -> AsyncDriver:
        async def send(call: Any) -> Any:
            return await self.transport.send(handle, call)

        return AsyncDriver(send, self.hooks, stages)

    async def _one(self, endpoint_id: str, build: Any) -> dict[str, Any]:
        """One request (retried as every request is) outside any job: the status, cancel,
        purge and health tasks."""
        handle = self.transport.endpoint(endpoint_id)
        plan: Plan[dict[str, Any]] = plans.send(handle, build(handle))
        return await self._driver(handle).run(plan)

    async def arun(self, spec: JobSpec, *, stream: bool = False, runsync_wait: float | None = None) -> Any:
        """Submit (or resume) ``spec``'s job through the lifecycle, wait, and return its
        transformed output (a stream's chunks); the journal and stream entries record how
        it ended."""
        handle = self.transport.endpoint(spec.endpoint_id, spec.base_url)
        ctx = self.hooks.context(spec.endpoint_id, base_url=handle.base_url, task_id=spec.task_id,
                                 attempt=spec.attempt, meta=spec.meta)
        control = Control()
        stages = GatewayStages(self, spec, handle, stream, control)
        req = JobRequest(spec.input, spec.webhook, spec.policy, self.settings.s3_config, spec.task_id,
                         timeout=spec.timeout, cancel_on_timeout=True, stream=stream, runsync=runsync_wait)
        if spec.expires_at is not None:
            req.deadline, req.deadline_kind = time.monotonic() + spec.expires_at - time.time(), "expired"
        try:
            output = await self._driver(handle, stages).run(run_job(handle, req, ctx), control,
                                                            stages.emit if stream else None)
        except HandedOff:
            raise
        except Cancelled as exc:
            await self._ended(spec, ctx, stream, "REVOKED", "CANCELLED", f"the task was {exc.reason}")
            raise
        except errors.BridgeError as exc:
            status = getattr(exc, "status", "") or "ERROR"
            await self._ended(spec, ctx, stream, status if ctx.job_id else None, status if isinstance(
                exc, errors.JobError) else "ERROR", str(exc), type(exc).__name__)
            raise
        finally:
            stages.done()
        await self._ended(spec, ctx, stream, "COMPLETED" if ctx.job_id else None, "COMPLETED", "")
        return output

    async def _ended(self, spec: JobSpec, ctx: JobContext, stream: bool, state: str | None,
                     eof_status: str, eof_error: str, error: str | None = None) -> None:
        """The bookkeeping of an ended job: webhook registration dropped, meta saved, the
        journal's state, a stream's eof entry (readers blocked on it must learn it ended)."""
        await self._forget_webhook(spec.task_id)
        await self._save_meta(ctx)
        if state is not None:
            await self.journal.finish(spec.task_id, state, error)
        if stream:
            await self.streams.eof(spec.task_id, eof_status, eof_error)

    async def _forget_webhook(self, task_id: str) -> None:
        """The job ended: later deliveries for it are refused (not on a hand-off: the next
        worker re-registers the same URL)."""
        self.watches.early.pop(task_id, None)
        if self.webhooks is not None:
            try:
                await self.webhooks.forget(task_id)
            except Exception:  # a Redis blip must not fail a finished job; the key expires
                log.warning("bridge: dropping the webhook registration of %s failed", task_id)

    async def _save_meta(self, ctx: JobContext) -> None:
        """``ctx.meta`` (redacted) into the journal, where :func:`bridge.tasks.job_meta` reads it."""
        if ctx.meta and ctx.task_id:
            safe = await self.hooks.aredact(ctx, ctx.meta)
            await self.journal.save_meta(ctx.task_id, json.dumps(safe, default=str))

    async def _cancel_recorded(self, task_id: str) -> bool:
        entry = await self.journal.get(task_id)
        job_id, endpoint_id = entry.get("job_id"), entry.get("endpoint_id")
        if not job_id or not endpoint_id:
            return False
        handle = self.transport.endpoint(endpoint_id, entry.get("base_url") or None)
        stages = _OnceStages(self.journal, task_id)
        await self._driver(handle, stages).run(plans.cancel_quietly(handle._new_job(job_id)))
        return True


class _OnceStages(Stages):
    """A /cancel outside a job's wait (``bridge.cancel_task``, a soft time limit): still once per task."""

    def __init__(self, journal: Journal, task_id: str) -> None:
        self.journal = journal
        self.task_id = task_id

    async def may_cancel(self, job_id: str) -> bool:
        return await self.journal.cancel_once(self.task_id)


_gateways: PerProcess[Gateway] = PerProcess(Gateway)


def get_gateway() -> Gateway:
    """This process's gateway (a fresh one after a fork: threads do not survive it)."""
    return _gateways.get()


def current_gateway() -> Gateway | None:
    """This process's gateway if one was made (nothing is made)."""
    return _gateways.current()


def reset_gateway() -> None:
    """Close and forget this process's gateway (tests, settings changes)."""
    gateway = _gateways.reset()
    if gateway is not None:
        gateway.close()
