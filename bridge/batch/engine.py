"""The asyncio batch engine: submit every input once, wait for each job, journal each result.

One coroutine per job in flight (bounded by :class:`~bridge.batch.admission.Gate`), with
submissions paced by :class:`~bridge.batch.admission.Pacer`. Each input is submitted with the
deterministic ``Idempotency-Key`` ``bridge-batch-{batch_id}-{nonce}-{index}-{attempt}``: a crash
between the endpoint accepting a job and the journal recording its id is healed on resume,
because the same key returns the same job instead of a second one. The nonce is drawn once
per journal, so a fresh journal never gets the jobs of an earlier, abandoned run back.
``attempt`` grows when an input is run again: cancelled (Ctrl+C), a bridge-side error, or
FAILED with ``retry_failed``.

Endpoint-wide mistakes (a wrong key, an unknown endpoint, a base URL that is not an endpoint)
stop the batch instead of failing every input: see :mod:`bridge.batch.tripwire`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge import errors
from bridge.batch import store as st
from bridge.batch.admission import Gate, Pacer, default_rate
from bridge.batch.options import Options
from bridge.batch.outcomes import error_dict, status_error
from bridge.batch.tripwire import Tripwire
from bridge.batch.waiting import PollWaiter, Waiter
from bridge.config import resolve_base_url

log = logging.getLogger("bridge.batch")


def idempotency_key(batch_id: str, index: int, attempt: int, nonce: str | None = None) -> str:
    """The key input ``index`` is submitted with; ``nonce`` is the journal's (None: journals
    written before nonces existed, whose resumes must keep their keys)."""
    if nonce:
        return f"bridge-batch-{batch_id}-{nonce}-{index}-{attempt}"
    return f"bridge-batch-{batch_id}-{index}-{attempt}"


class _Stopped(Exception):
    """The batch stopped on an endpoint-wide error while this input's job was in flight."""


@dataclass
class Counters:
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    in_flight: int = 0
    submitted: int = 0
    resumed: int = 0
    skipped: int = 0
    throttled: int = 0
    #: What a resume found, by :attr:`bridge.batch.store.Item.outcome`: ``kept`` (completed,
    #: or FAILED without retry_failed) and ``retried`` inputs.
    kept: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)


class Engine:
    """Runs one batch inside an event loop; :meth:`run` returns when every input finished or
    the batch was cancelled (then every job it had in flight has been cancelled remotely)."""

    def __init__(
        self,
        batch_id: str,
        endpoint_id: str,
        inputs: Iterable[Any],
        store: st.Store,
        options: Options,
        *,
        waiter: Waiter | None = None,
        endpoint_factory: Callable[[], Any] | None = None,
        on_finish: Callable[[int], None] | None = None,
        hooks: Any = None,
    ) -> None:
        self.batch_id = batch_id
        self.endpoint_id = endpoint_id
        self.inputs = inputs
        self.store = store
        self.options = options
        self.base_url = resolve_base_url(options.base_url)
        self.counters = Counters()
        self._waiter = waiter
        self._poller = PollWaiter(status_rate=default_rate("status", self.base_url))
        self._endpoint_factory = endpoint_factory
        self._on_finish = on_finish
        if hooks is None:
            from bridge.hooks import Hooks

            hooks = Hooks.from_settings()  # the same plugins the gateway runs; none cost ~nothing
        self.hooks = hooks
        self.run_pacer = Pacer(default_rate("run", self.base_url, options.run_rate))
        self.cancel_pacer = Pacer(default_rate("cancel", self.base_url, options.cancel_rate))
        self.gate = Gate(options.concurrency, options.max_queue_depth)
        self.cancel_event = asyncio.Event()
        #: Set by a cancel and by the tripwire: admit nothing more, submit nothing more.
        self.halt = asyncio.Event()
        self.tripwire = Tripwire(endpoint_id)
        self.nonce = store.get_meta("nonce")
        self.total: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ep: Any = None

    # -- public ------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop admitting inputs and cancel every job in flight (call from the loop)."""
        self.cancel_event.set()
        self.halt.set()

    @property
    def stopped_by(self) -> errors.BridgeError | None:
        """The endpoint-wide error that stopped the batch, if one did."""
        return self.tripwire.error

    async def run(self) -> Counters:
        self._ep = self._make_endpoint()
        try:
            await self._produce()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            self.store.flush()
            waiter_close = getattr(self._waiter, "close", None)
            if waiter_close is not None:
                await waiter_close()
            close = getattr(self._ep, "close", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
        return self.counters

    # -- internals ---------------------------------------------------------------------------
    def _make_endpoint(self) -> Any:
        if self._endpoint_factory is not None:
            return self._endpoint_factory()
        from bridge.client import RetryPolicy
        from bridge.client.aio import AsyncioEndpoint

        # The engine does its own retrying (429s feed the pacer), so each request is tried once.
        return AsyncioEndpoint(
            self.endpoint_id, api_key=self.options.api_key, base_url=self.base_url, retry=RetryPolicy.none()
        )

    async def _produce(self) -> None:
        fresh = not self.store.counts()  # a new journal: skip the per-index look-ups
        index = -1
        for index, value in enumerate(self.inputs):
            if self.halt.is_set():
                break
            item = None if fresh else self.store.get(index)
            attempt = self._resume_attempt(item)
            if attempt is None:
                continue  # kept from an earlier run
            if not await self._enter(index):
                break
            if self.halt.is_set():
                await self.gate.leave(index)
                break
            if item is not None and item.state == st.SUBMITTED and item.job_id:
                self.counters.resumed += 1
                self._spawn(self._one(index, value, item.attempt, item.job_id))
            else:
                self._spawn(self._one(index, value, attempt, None))
        else:
            self.total = index + 1

    def _resume_attempt(self, item: st.Item | None) -> int | None:
        """The attempt to (re)submit an input with, or None to keep its earlier result."""
        if item is None:
            return 0
        outcome = item.outcome
        if outcome == "in_flight":
            return item.attempt
        if outcome == "completed" or (outcome == "failed" and not self.options.retry_failed):
            self.counters.skipped += 1
            self.counters.kept[outcome] = self.counters.kept.get(outcome, 0) + 1
            if outcome == "completed":
                self.counters.done += 1
            else:
                self.counters.failed += 1
            return None
        self.counters.retried[outcome] = self.counters.retried.get(outcome, 0) + 1
        # A batch-cancelled row already holds its next attempt; the others get a fresh key.
        return item.attempt if item.state == st.CANCELLED else item.attempt + 1

    async def _enter(self, index: int) -> bool:
        """Wait for a slot; False when the batch was cancelled while waiting."""
        enter = asyncio.ensure_future(self.gate.enter(index))
        stop = asyncio.ensure_future(self.halt.wait())
        await asyncio.wait({enter, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if enter.done():
            return True
        enter.cancel()
        await asyncio.gather(enter, return_exceptions=True)
        return False

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _context(self, index: int, attempt: int) -> Any:
        return self.hooks.context(self.endpoint_id, base_url=self.base_url, attempt=attempt,
                                  meta={"batch_id": self.batch_id, "index": index})

    async def _one(self, index: int, value: Any, attempt: int, job_id: str | None) -> None:
        self.counters.in_flight += 1
        ctx = self._context(index, attempt)
        try:
            await self._job(index, value, attempt, job_id, ctx)
        except _Stopped:
            pass  # journalled as in flight: a re-run with the cause fixed resumes the job
        except errors.BridgeError as exc:
            self._failed(index, ctx.attempt, ctx.job_id, error_dict(exc))
            await self.hooks.anotify("failed", ctx, error=exc, delay_ms=None, execution_ms=None)
        except Exception as exc:  # a bug or a broken plugin must not hang the batch
            log.exception("input %d of batch %s failed unexpectedly", index, self.batch_id)
            self._failed(index, ctx.attempt, ctx.job_id, error_dict(exc))
        finally:
            self.counters.in_flight -= 1
            await self.gate.leave(index)
            if self._on_finish is not None:
                self._on_finish(index)

    async def _job(self, index: int, value: Any, attempt: int, job_id: str | None, ctx: Any) -> None:
        resumed = job_id is not None
        ctx.attempt, ctx.job_id = attempt, job_id
        if job_id is None:
            payload = await self.hooks.atransform_input(ctx, value)  # JobRejected: a veto
            hit, output = await self.hooks.alookup(ctx, payload)
            if hit:  # e.g. a cache: nothing is submitted
                await self._completed(index, attempt, None, output, ctx, {})
                return
            job_id = await self._submit(index, payload, attempt)
            if job_id is None:  # cancelled before the endpoint accepted anything
                return
            ctx.job_id = job_id
            self.store.submitted(index, attempt, job_id)
            await self.hooks.anotify("submitted", ctx, input=None)
        if self.cancel_event.is_set():
            await self._cancel_remote(index, attempt, job_id)
            return
        try:
            body = await self._wait_through_refusals(index, job_id)
        except errors.NotFound:
            if not resumed:
                raise
            # The job recorded before a restart is gone (expired, purged): run it again,
            # with a fresh key since the old one may still map to the vanished job.
            await self._job(index, value, attempt + 1, None, ctx)
            return
        if body is None:
            await self._cancel_remote(index, attempt, job_id)
            return
        status = str(body.get("status"))
        if status == "COMPLETED":
            await self._completed(index, attempt, job_id, body.get("output"), ctx, body)
            return
        error = status_error(status, body)
        self._failed(index, attempt, job_id, error)
        exc_type = {"FAILED": errors.JobFailed, "CANCELLED": errors.JobCancelled,
                    "TIMED_OUT": errors.JobTimedOut}.get(status, errors.JobFailed)
        await self.hooks.anotify("failed", ctx, error=exc_type(error["message"], job_id, self.endpoint_id, None,
                                                               error.get("error")),
                                 delay_ms=body.get("delayTime"), execution_ms=body.get("executionTime"))

    async def _completed(self, index: int, attempt: int, job_id: str | None, output: Any, ctx: Any,
                         body: dict[str, Any]) -> None:
        output = await self.hooks.atransform_output(ctx, output)
        self.store.finished(index, st.DONE, attempt, job_id, output)
        self.counters.done += 1
        await self.hooks.anotify("completed", ctx, output=output, delay_ms=body.get("delayTime"),
                                 execution_ms=body.get("executionTime"))

    def _failed(self, index: int, attempt: int, job_id: str | None, error: dict[str, Any]) -> None:
        self.store.finished(index, st.FAILED, attempt, job_id, error)
        self.counters.failed += 1

    def _trip(self, exc: errors.BridgeError) -> bool:
        """Feed one refused request to the tripwire; True (and halted) once the batch stops."""
        if self.tripwire.note_error(exc):
            if not self.halt.is_set():  # info: the handle reports the error itself, once
                log.info("batch %s: %s", self.batch_id, self.tripwire.error)
            self.halt.set()
            return True
        return False

    async def _submit(self, index: int, value: Any, attempt: int) -> str | None:
        """The accepted job's id; None when the batch halted before the endpoint accepted it
        (nothing is recorded: the input stays pending for a re-run)."""
        key = idempotency_key(self.batch_id, index, attempt, self.nonce)
        failures = 0
        maybe_sent = False  # a try may have created the job: finish it to learn the job id
        webhook = await self._webhook_for(index)
        while True:
            if self.halt.is_set() and not maybe_sent:
                return None
            await self.run_pacer.acquire()
            try:
                job = await self._ep.run(
                    value, webhook=webhook, policy=self.options.policy, idempotency_key=key
                )
            except errors.RateLimited as exc:
                # Absorbed: pause every sender, then try again with the same key.
                self.run_pacer.penalize(exc.retry_after if exc.retry_after is not None else 1.0)
                self.counters.throttled += 1
                continue
            except (errors.AuthenticationError, errors.NotFound, errors.MalformedResponse,
                    errors.TransportError, errors.ServerError) as exc:
                if self._trip(exc):
                    return None
                if isinstance(exc, errors.MalformedResponse):
                    raise
                maybe_sent = maybe_sent or isinstance(exc, (errors.ServerError, errors.TransportError))
                failures += 1
                if failures >= self.options.submit_attempts:
                    raise
                # The same key makes the retry safe even if the endpoint did create the job.
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            self.tripwire.accepted_job()
            self.counters.submitted += 1
            return str(job.job_id)

    async def _webhook_for(self, index: int) -> str | None:
        if self._waiter is None:
            return None
        return await self._waiter.webhook_for(self.batch_id, index)

    async def _wait_through_refusals(self, index: int, job_id: str) -> dict[str, Any] | None:
        """:meth:`_wait`, looking again after a 401/403: a key revoked mid-batch refuses every
        job's status looks, which the tripwire counts; once it trips, :class:`_Stopped`."""
        refusals = 0
        while True:
            try:
                return await self._wait(index, job_id)
            except errors.AuthenticationError as exc:
                if self._trip(exc):
                    raise _Stopped() from exc
                refusals += 1
                if refusals >= self.options.submit_attempts:
                    raise
                await asyncio.sleep(min(5.0, 0.1 * 2**refusals))

    async def _wait(self, index: int, job_id: str) -> dict[str, Any] | None:
        """The terminal status body, or None when the batch was cancelled first."""
        waiter = self._waiter or self._poller
        job = self._ep.job(job_id)
        waiting = asyncio.ensure_future(
            waiter.wait(job, self.batch_id, index, lambda: self.gate.started(index))
        )
        stop = asyncio.ensure_future(self.cancel_event.wait())
        try:
            await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return None

    async def _cancel_remote(self, index: int, attempt: int, job_id: str) -> None:
        """Cancel one job at the endpoint and journal it for resubmission with a fresh key."""
        for tries in range(1, 6):
            await self.cancel_pacer.acquire()
            try:
                await self._ep.job(job_id).cancel()
                break
            except errors.RateLimited as exc:
                self.cancel_pacer.penalize(exc.retry_after or 1.0)
            except errors.NotFound:
                break  # expired or already gone: nothing left to stop
            except errors.BridgeError as exc:
                log.warning("cancelling job %s failed (try %d): %s", job_id, tries, exc)
                await asyncio.sleep(0.2 * tries)
        self.store.cancelled(index, attempt + 1, job_id)
        self.counters.cancelled += 1


__all__ = ["Counters", "Engine", "Options", "error_dict", "idempotency_key"]
