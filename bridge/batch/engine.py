"""The asyncio batch engine: every input runs through the one job lifecycle
(:mod:`bridge.lifecycle`) with what a batch adds (:class:`BatchStages`): its store (resume a
recorded job, record each job id), admission (a bounded number in flight, paced /run and
/status), the tripwire, and a webhook waiter when one is given.

One coroutine per job in flight (bounded by :class:`~bridge.batch.admission.Gate`), with
requests paced by :class:`~bridge.batch.admission.Pacer`. Each input is submitted with the
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
import types
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bridge import errors
from bridge.batch import store as st
from bridge.batch.admission import Gate, Pacer, default_rate
from bridge.batch.options import Options
from bridge.batch.outcomes import error_dict
from bridge.batch.tripwire import Tripwire
from bridge.config import resolve_base_url
from bridge.lifecycle.drive import AsyncDriver, Control
from bridge.lifecycle.job import JobRequest, run_job
from bridge.lifecycle.stages import Stages
from bridge.lifecycle.steps import Cancelled, Delivered
from bridge.transport import Reply
from bridge.wire import parse_retry_after, terminal

log = logging.getLogger("bridge.batch")


def idempotency_key(batch_id: str, index: int, attempt: int, nonce: str | None = None) -> str:
    """The key input ``index`` is submitted with; ``nonce`` is the journal's (None: journals
    written before nonces existed, whose resumes must keep their keys)."""
    if nonce:
        return f"bridge-batch-{batch_id}-{nonce}-{index}-{attempt}"
    return f"bridge-batch-{batch_id}-{index}-{attempt}"


class _Stopped(BaseException):  # noqa: N818 (not an error: it passes through the lifecycle untouched)
    """The batch stopped on an endpoint-wide error: this input stays pending (or in flight,
    when its job was accepted) for a re-run with the cause fixed."""


class Counters(types.SimpleNamespace):
    """What a batch run has done, as ints: ``done``, ``failed``, ``cancelled``, ``in_flight``,
    ``submitted``, ``resumed``, ``skipped`` (kept from an earlier run), ``throttled`` (429s);
    and, by :attr:`bridge.batch.store.Item.outcome`, what a resume found: ``kept`` (completed,
    or FAILED without retry_failed) and ``retried`` inputs."""

    def __init__(self) -> None:
        super().__init__(**dict.fromkeys(_COUNTS, 0), kept={}, retried={})


_COUNTS = ("done", "failed", "cancelled", "in_flight", "submitted", "resumed", "skipped", "throttled")


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
        waiter: Any = None,
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
        #: A webhook waiter (:class:`bridge.webhooks.waiter.WebhookWaiter`), or None to look.
        self._waiter = waiter
        self._endpoint_factory = endpoint_factory
        self._on_finish = on_finish
        if hooks is None:
            from bridge.hooks import Hooks

            hooks = Hooks.from_settings()  # the same plugins the gateway runs; none cost ~nothing
        self.hooks = hooks
        self.run_pacer = Pacer(default_rate("run", self.base_url, options.run_rate))
        self.cancel_pacer = Pacer(default_rate("cancel", self.base_url, options.cancel_rate))
        self.status_pacer = Pacer(default_rate("status", self.base_url))
        self._pacers = {"run": self.run_pacer, "cancel": self.cancel_pacer, "status": self.status_pacer,
                        "status-sync": self.status_pacer}
        #: The interruption handles of the jobs waiting now, by input index.
        self.controls: dict[int, Control] = {}
        #: Requests (by id) a 429 already went back to the lifecycle for.
        self._refused: set[int] = set()
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
        for control in list(self.controls.values()):
            control.interrupt(Cancelled("cancelled"))

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
        import dataclasses

        from bridge.client.aio import AsyncioEndpoint

        ep = AsyncioEndpoint(self.endpoint_id, api_key=self.options.api_key, base_url=self.base_url)
        ep.waits = ep.waits.replace(retry=dataclasses.replace(ep.waits.retry, attempts=self.options.submit_attempts))
        ep.plain = False  # the batch's own plugins and stages listen (the endpoint's are not used)
        return ep

    async def _send(self, call: Any) -> Reply:
        """One request, paced per route; a 429 holds every sender of the route for its
        Retry-After. The first 429 to a /run goes back to the lifecycle (which retries it
        and tells the observers, as for any caller); later ones to the same request are sent
        again here once the pacer allows: 429s only mean "later", so a batch queued behind
        a limited endpoint does not spend its inputs' retries on them."""
        pacer = self._pacers.get(call.route)
        while True:
            if pacer is not None:
                await pacer.acquire()
            reply: Reply = await self._ep.transport.send(call)
            if reply.status != 429 or pacer is None:
                self._refused.discard(id(call))
                return reply
            retry_after = parse_retry_after(reply.headers.get("Retry-After"))
            pacer.penalize(retry_after if retry_after is not None else 1.0)
            self.counters.throttled += 1
            if call.route != "run" or id(call) not in self._refused:
                self._refused.add(id(call))
                return reply

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
            pass  # journalled as pending or in flight: a re-run with the cause fixed goes on
        except Cancelled:
            if ctx.job_id:  # cancelled at the endpoint: run again on a re-run, with a fresh key
                self.store.cancelled(index, ctx.attempt + 1, ctx.job_id)
                self.counters.cancelled += 1
        except errors.BridgeError as exc:
            self._failed(index, ctx.attempt, ctx.job_id, error_dict(exc))
        except Exception as exc:  # a bug or a broken plugin must not hang the batch
            log.exception("input %d of batch %s failed unexpectedly", index, self.batch_id)
            self._failed(index, ctx.attempt, ctx.job_id, error_dict(exc))
        finally:
            self.counters.in_flight -= 1
            await self.gate.leave(index)
            if self._on_finish is not None:
                self._on_finish(index)

    async def _job(self, index: int, value: Any, attempt: int, job_id: str | None, ctx: Any) -> None:
        """Run input ``index`` through the lifecycle until it ends; refusals that may be the
        whole endpoint's (401/403/404) are looked at again, the tripwire counting them."""
        refusals = 0
        while True:
            ctx.attempt, ctx.job_id = attempt, job_id
            control = Control()
            stages = BatchStages(self, index, attempt, job_id, control)
            request = JobRequest(value, policy=self.options.policy,
                                 idempotency_key=idempotency_key(self.batch_id, index, attempt, self.nonce),
                                 timeout=self.options.timeout, cancel_on_timeout=True, stream=self.options.stream)
            try:
                output = await AsyncDriver(self._send, self.hooks, stages).run(
                    run_job(self._ep, request, ctx), control)
            except errors.NotFound as exc:
                if job_id is None:
                    if self._refused_again(exc, refusals := refusals + 1):
                        raise
                    await asyncio.sleep(min(5.0, 0.1 * 2**refusals))
                    continue
                # The job recorded before a restart is gone (expired, purged): run it again,
                # with a fresh key since the old one may still map to the vanished job.
                attempt, job_id = attempt + 1, None
                continue
            except errors.AuthenticationError as exc:
                if self._refused_again(exc, refusals := refusals + 1):
                    raise
                await asyncio.sleep(min(5.0, 0.1 * 2**refusals))
                job_id = ctx.job_id  # a refused look resumes its job; a refused /run submits again
                continue
            except errors.BridgeError as exc:
                if self._trip(exc):
                    raise _Stopped() from exc
                raise
            finally:
                await stages.done()
            self.store.finished(index, st.DONE, attempt, ctx.job_id, output)
            self.counters.done += 1
            return

    def _refused_again(self, exc: errors.BridgeError, refusals: int) -> bool:
        """After a 401/403/404: True to give up on this input (retries spent); raises
        :class:`_Stopped` once the tripwire says the whole endpoint refuses."""
        if self._trip(exc):
            raise _Stopped() from exc
        return refusals >= self.options.submit_attempts

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



class BatchStages(Stages):
    """What one input's job adds to the lifecycle: the store, admission, the tripwire and
    webhooks (see :mod:`bridge.lifecycle.stages`)."""

    def __init__(self, engine: Engine, index: int, attempt: int, resume: str | None, control: Control) -> None:
        self.engine = engine
        self.index = index
        self.attempt = attempt
        self.resume = resume
        self.control = control
        self.ref: str | None = None
        self._delivery: asyncio.Task[None] | None = None

    def claim(self, ctx: Any) -> str | None:
        if self.resume:
            return self.resume
        if self.engine.halt.is_set():
            raise _Stopped()  # nothing was sent: the input stays pending
        return None

    async def webhook(self, ctx: Any, relay: str | None, excluded: bool) -> tuple[str | None, Any]:
        waiter = self.engine._waiter
        if waiter is None or excluded:
            return relay, None
        self.ref = waiter.ref(self.engine.batch_id, self.index)
        url = await waiter.url_for(self.ref)
        return url, (waiter.fallback_after, waiter.fallback_interval)

    def record(self, ctx: Any, job_id: str) -> None:
        engine = self.engine
        engine.tripwire.accepted_job()
        engine.counters.submitted += 1
        engine.store.submitted(self.index, self.attempt, job_id)

    def waiting(self, ctx: Any, job_id: str) -> None:
        engine = self.engine
        engine.controls[self.index] = self.control
        if engine.cancel_event.is_set():
            self.control.interrupt(Cancelled("cancelled"))
        waiter = engine._waiter
        if waiter is not None:
            self.ref = self.ref or waiter.ref(engine.batch_id, self.index)
            self._delivery = asyncio.ensure_future(self._delivered(waiter, self.ref))

    async def _delivered(self, waiter: Any, ref: str) -> None:
        body = await waiter.wait_for(ref, None)
        if body is not None and terminal(body):
            self.control.interrupt(Delivered(body))

    async def on_event(self, name: str, ctx: Any, data: dict[str, Any]) -> None:
        if name == "status_changed" and data.get("status") != "IN_QUEUE":
            await self.engine.gate.started(self.index)  # left the endpoint's queue
        elif name == "retried" and self.engine._trip(data["error"]):
            raise _Stopped()

    async def done(self) -> None:
        self.engine.controls.pop(self.index, None)
        if self._delivery is not None:
            self._delivery.cancel()
        waiter = self.engine._waiter
        if waiter is not None and self.ref is not None:
            await waiter.forget(self.ref)


__all__ = ["Counters", "Engine", "Options", "error_dict", "idempotency_key"]
