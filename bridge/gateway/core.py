"""The gateway: submit → record the job id in the journal → wait on the shared poller →
hooks → result. Plain functions and one event-loop thread per process; no Celery here, so
the Celery tasks, the batch runner and tests all drive it the same way.

Callers on any thread use the sync methods (:meth:`Gateway.run`, ...). The work runs as
coroutines on the process's gateway loop; the calling thread only blocks on the result, so
10,000 waiting callers cost 10,000 blocked threads (or one each of whatever the caller
uses) and one poller, not 10,000 polling loops.
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
from bridge.client._wire import terminal
from bridge.gateway.journal import Journal
from bridge.gateway.poller import Cancelled, HandedOff, Poller
from bridge.gateway.settings import GatewaySettings
from bridge.gateway.stream_writer import StreamWriter, collecting
from bridge.gateway.submit import Submitter
from bridge.gateway.transport import EndpointHandle, Transport
from bridge.hooks import Hooks, JobContext
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
    """One per process (see :func:`get_gateway`); owns the loop thread, Redis, HTTP, poller."""

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
        self.streams = StreamWriter(self.redis, self.hooks, self.settings.stream_maxlen, self.settings.journal_ttl)
        self.poller = Poller(self.settings, self.transport, self.journal, self.redis, self.hooks)
        self.submitter = Submitter(self.settings, self.journal, self.transport, self.hooks)
        # Webhooks (BRIDGE_WEBHOOK_URL set): one waiter per process, its inbox listener runs
        # on this loop and ends the poller's watch of the task a verified delivery names.
        self.webhooks = bridge_webhooks.from_settings(self.settings.redis_url)
        if self.webhooks is not None:
            self.webhooks.on_delivery = self.poller.deliver
        self.loop.call_soon(self.poller.start)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    @property
    def submit_windows(self) -> deque[tuple[float, float]]:
        """(``/run`` round trip, job id write) in seconds, the latest 10,000 submits."""
        return self.submitter.windows

    @property
    def stats(self) -> dict[str, int]:
        """``possible_double_submits``: claims taken over inside the submit window."""
        return self.submitter.stats

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
        self.loop.call_soon_threadsafe(self.poller.handoff)

    def set_handoff_key(self, key: str | None) -> None:
        self.poller.handoff_key = key

    def cancel_job_of(self, task_id: str) -> bool:
        """POST /cancel for the job ``task_id`` recorded (once per task); False when none."""
        return self.call(self._cancel_recorded(task_id))

    def journal_entry(self, task_id: str) -> dict[str, str]:
        return self.call(self.journal.get(task_id))

    # -- the job ----------------------------------------------------------------------------------

    async def _one(self, endpoint_id: str, build: Any) -> dict[str, Any]:
        handle = self.transport.endpoint(endpoint_id)
        return await self.transport.call(handle, build(handle))

    async def arun(self, spec: JobSpec, *, stream: bool = False, runsync_wait: float | None = None) -> Any:
        started = time.monotonic()
        handle = self.transport.endpoint(spec.endpoint_id, spec.base_url)
        ctx = self.hooks.context(spec.endpoint_id, base_url=handle.base_url, task_id=spec.task_id,
                                 attempt=spec.attempt, meta=spec.meta)
        try:
            result = await self._arun(spec, handle, ctx, started, stream, runsync_wait)
            await self._forget_webhook(spec.task_id)
            return result
        except Cancelled as exc:
            await self._forget_webhook(spec.task_id)
            await self._save_meta(ctx)
            await self.journal.finish(spec.task_id, "REVOKED")
            if stream:  # readers blocked on the stream must learn it ended
                await self.streams.eof(spec.task_id, "CANCELLED", f"the task was {exc.reason}")
            await self.hooks.anotify("cancelled", ctx, reason=exc.reason)
            raise
        except HandedOff:
            raise
        except errors.BridgeError as exc:
            await self._forget_webhook(spec.task_id)
            await self._redact_error(ctx, exc)
            await self._save_meta(ctx)
            if exc.job_id is None and ctx.job_id:
                exc.job_id = ctx.job_id  # every error carries the job id once there is one
                exc.args = (exc.args[0], ctx.job_id, *exc.args[2:])
            if stream and not isinstance(exc, errors.JobError):  # JobErrors already wrote theirs
                await self.streams.eof(spec.task_id, "ERROR", str(exc))
            await self.hooks.anotify("failed", ctx, error=exc, delay_ms=None, execution_ms=None)
            if ctx.job_id:
                await self.journal.finish(spec.task_id, getattr(exc, "status", "") or "ERROR", type(exc).__name__)
            raise

    async def _arun(self, spec: JobSpec, handle: EndpointHandle, ctx: JobContext, started: float,
                    stream: bool, runsync_wait: float | None) -> Any:
        payload = await self.hooks.atransform_input(ctx, spec.input)
        hit, output = await self.hooks.alookup(ctx, payload)
        if hit:
            if stream:  # readers of the task's stream must see the answer and its end
                chunks = output if isinstance(output, list) else [output]
                output = await self.streams.sink(spec.task_id, ctx)(chunks)
                await self.streams.eof(spec.task_id, "COMPLETED", "")
            else:
                output = await self.hooks.atransform_output(ctx, output)
            await self._save_meta(ctx)
            await self.hooks.anotify("completed", ctx, output=output, delay_ms=None, execution_ms=None)
            return output
        self._check_input(spec, payload)
        webhook, fallback = spec.webhook, None
        if self.webhooks is not None and not stream and runsync_wait is None:
            # The job reports back to our receiver (per-job secret in the URL); the caller's
            # own webhook, if any, gets the verified body relayed. Polls only as a fallback.
            try:
                webhook = await self.webhooks.url_for(spec.task_id, relay=spec.webhook, await_here=False)
                fallback = (self.webhooks.fallback_after, self.webhooks.fallback_interval)
            except Exception as exc:  # Redis unreachable for the registration: poll as usual
                log.warning("bridge: webhook registration for %s failed (%s); polling instead",
                            spec.task_id, type(exc).__name__)
        if runsync_wait is not None:
            call = handle.wire.runsync(payload, runsync_wait, webhook, spec.policy, self.settings.s3_config,
                                      spec.task_id)
        else:
            call = handle.wire.run(payload, webhook, spec.policy, self.settings.s3_config, spec.task_id)
        job_id, body = await self.submitter.submit(spec, handle, call, ctx, payload)
        aggregate: list[Any] = []
        sink = None
        if stream:
            aggregate.extend(await self.streams.so_far(spec.task_id))
            sink = collecting(self.streams.sink(spec.task_id, ctx), aggregate)
        if body is None or not terminal(body):
            deadline, kind = self._deadline(spec, started)
            body = await self.poller.wait(handle, spec.task_id, job_id, deadline=deadline,
                                          deadline_kind=kind, sink=sink, ctx=ctx, fallback=fallback)
        if stream:
            return await self._finish_stream(spec, handle, ctx, body, aggregate)
        output = handle.wire.outcome(body, job_id)
        await self.journal.finish(spec.task_id, "COMPLETED")
        output = await self.hooks.atransform_output(ctx, output)
        await self._save_meta(ctx)
        await self.hooks.anotify("completed", ctx, output=output, delay_ms=body.get("delayTime"),
                                 execution_ms=body.get("executionTime"))
        return output

    async def _forget_webhook(self, task_id: str) -> None:
        """The job ended: later deliveries for it are refused (not on a hand-off: the next
        worker re-registers the same URL)."""
        self.poller.early.pop(task_id, None)
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

    async def _redact_error(self, ctx: JobContext, exc: errors.BridgeError) -> None:
        """An endpoint's error text comes from the job's output: redact it before it is raised
        (the task's result and logs show it)."""
        if not isinstance(exc, errors.JobError) or not self.hooks.active("bridge_redact"):
            return
        message = await self.hooks.aredact(ctx, exc.args[0])
        error = await self.hooks.aredact(ctx, exc.error)
        exc.message, exc.error = message, error
        exc.args = (message, *exc.args[1:4], error, *exc.args[5:])

    def _check_input(self, spec: JobSpec, payload: Any) -> None:
        if isinstance(payload, dict) and "s3Config" in payload:
            raise errors.InvalidRequest(
                "s3Config must not travel in task arguments (they are stored and logged)",
                None, spec.endpoint_id, "set BRIDGE_S3_CONFIG in the worker's environment instead",
            )
        try:
            size = len(json.dumps(payload, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError):
            return  # the wire names the problem precisely when it encodes the body
        if size > self.settings.max_input_bytes:
            raise errors.PayloadTooLarge(
                f"the input is {size:,} bytes of JSON, over BRIDGE_MAX_INPUT_BYTES={self.settings.max_input_bytes:,}",
                None, spec.endpoint_id,
            )

    def _deadline(self, spec: JobSpec, started: float) -> tuple[float | None, str]:
        loop_now = self.loop.time()
        candidates: list[tuple[float, str]] = []
        if spec.timeout is not None:
            candidates.append((loop_now + spec.timeout - (time.monotonic() - started), "timeout"))
        if spec.expires_at is not None:
            candidates.append((loop_now + spec.expires_at - time.time(), "expired"))
        if not candidates:
            return None, "timeout"
        return min(candidates)

    async def _cancel_recorded(self, task_id: str) -> bool:
        entry = await self.journal.get(task_id)
        job_id, endpoint_id = entry.get("job_id"), entry.get("endpoint_id")
        if not job_id or not endpoint_id:
            return False
        handle = self.transport.endpoint(endpoint_id, entry.get("base_url") or None)
        await self.poller.cancel_remote(handle, task_id, job_id)
        return True

    # -- streams --------------------------------------------------------------------------------

    async def _finish_stream(self, spec: JobSpec, handle: EndpointHandle, ctx: JobContext,
                             body: dict[str, Any], aggregate: list[Any]) -> list[Any]:
        status, error = str(body.get("status")), ""
        if status != "COMPLETED":
            if "error" not in body:
                body = await self.transport.call(handle, handle.wire.status(ctx.job_id or ""))
            try:
                handle.wire.outcome(body, ctx.job_id)
            except errors.JobError as exc:
                await self._redact_error(ctx, exc)  # the eof entry shows it to stream readers
                error = str(exc)
                await self.streams.eof(spec.task_id, status, error)
                raise
        await self.streams.eof(spec.task_id, status, error)
        await self.journal.finish(spec.task_id, status)
        await self._save_meta(ctx)
        await self.hooks.anotify("completed", ctx, output=aggregate, delay_ms=body.get("delayTime"),
                                 execution_ms=body.get("executionTime"))
        return aggregate


_lock = threading.Lock()
_gateway: Gateway | None = None


def get_gateway() -> Gateway:
    """This process's gateway (a fresh one after a fork: threads do not survive it)."""
    global _gateway
    with _lock:
        if _gateway is None or _gateway.pid != os.getpid():
            _gateway = Gateway()
        return _gateway


def _after_fork_in_child() -> None:
    """A forked child (a prefork pool process) starts with no gateway thread; the parent's
    lock may have been held by one of the parent's other threads at the fork."""
    global _lock, _gateway
    _lock = threading.Lock()
    _gateway = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def reset_gateway() -> None:
    """Close and forget this process's gateway (tests, settings changes)."""
    global _gateway
    with _lock:
        if _gateway is not None and _gateway.pid == os.getpid():
            _gateway.close()
        _gateway = None
