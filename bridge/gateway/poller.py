"""The multiplexed poller: one per worker process, waiting on all its in-flight jobs.

One event-loop thread owns every wait. A watch is a small record whose next request and
deadline sit on the loop's timer heap; one coroutine reads, every ``cancel_check``
seconds, the cancel keys of all watched tasks with one MGET per 5,000 tasks. It sends long polls (``/status-sync?wait=``)
where the endpoint offers them, falling back to backed-off ``/status`` polls for that
endpoint, all through the pooled session inside each endpoint's budget. There is no
sleeping loop per job: a watch is a small record, and a job costs nothing between polls.

A watch ends with the terminal status body, or raises :class:`Cancelled` (cancel key set
or ``expires`` passed; the remote job is cancelled first), :class:`bridge.errors.Timeout`
(bridge's ``timeout=``; the remote job is cancelled first), :class:`HandedOff` (the
worker is shutting down: the remote job keeps running for the next worker to resume) or
:class:`bridge.errors.UnknownStatus` (the job showed a status outside RunPod's set for
``BRIDGE_UNKNOWN_STATUS_TIMEOUT`` seconds, logged once with its id when first seen; the
remote job is left alone, as the client does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge import errors, keys
from bridge.client._policy import RetryPolicy, UnknownStatusClock
from bridge.client._wire import is_known_status, terminal
from bridge.gateway.journal import Journal
from bridge.gateway.settings import GatewaySettings
from bridge.gateway.transport import EndpointHandle, Transport
from bridge.hooks import Hooks, JobContext

log = logging.getLogger("bridge.gateway")

ChunkSink = Callable[[list[Any]], Awaitable[None]]


class Cancelled(Exception):
    """The task was revoked (``reason='revoked'``) or expired (``'expired'``) while waiting."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        super().__init__(reason, job_id)
        self.reason = reason
        self.job_id = job_id


class HandedOff(Exception):
    """The worker is shutting down; the remote job was left running for the next delivery."""


class Watch:
    __slots__ = ("task_id", "handle", "job_id", "stream", "sink", "deadline", "deadline_kind",
                 "future", "inflight", "interval", "err_since", "timer", "deadline_timer", "polls", "done",
                 "ctx", "status", "slow", "clock")

    def __init__(self, task_id: str, handle: EndpointHandle, job_id: str, stream: bool,
                 sink: ChunkSink | None, deadline: float | None, deadline_kind: str,
                 future: asyncio.Future[dict[str, Any]]) -> None:
        self.task_id = task_id
        self.handle = handle
        self.job_id = job_id
        self.stream = stream
        self.sink = sink
        self.deadline = deadline
        self.deadline_kind = deadline_kind
        self.future = future
        self.inflight: asyncio.Task[None] | None = None
        self.interval = 0.0
        self.err_since: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.polls = 0
        self.done = False
        self.ctx: JobContext | None = None  # the job's hook context (events carry it)
        self.status: str | None = None  # the last remote status seen (status_changed)
        self.slow: float | None = None  # webhook fallback: fixed interval of plain polls
        self.clock: UnknownStatusClock | None = None  # made when an unknown status is first seen


class Poller:
    """Lives on the gateway's event loop; every method but :meth:`handoff_threadsafe` runs there."""

    def __init__(self, settings: GatewaySettings, transport: Transport, journal: Journal, redis: Any,
                 hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks if hooks is not None else Hooks.empty()
        self.transport = transport
        self.journal = journal
        self.redis = redis
        self.watches: dict[str, set[Watch]] = {}
        #: Webhook bodies that arrived before their task's watch began (submit → wait race).
        self.early: dict[str, dict[str, Any]] = {}
        self._notes: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._handing_off = False
        self.handoff_key: str | None = None  # set by the worker step (prefork children read it)
        self.cancel_retry = RetryPolicy(attempts=4, deadline=10.0, base=0.2, max_backoff=2.0)
        self.stats = {"polls": 0, "cancel_checks": 0, "cancels_sent": 0}

    # -- public (on the loop) ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flags_loop())

    @property
    def in_flight(self) -> int:
        return sum(len(ws) for ws in self.watches.values())

    async def wait(self, handle: EndpointHandle, task_id: str, job_id: str, *,
                   deadline: float | None = None, deadline_kind: str = "timeout",
                   sink: ChunkSink | None = None, ctx: JobContext | None = None,
                   fallback: tuple[float, float] | None = None) -> dict[str, Any]:
        """Wait for ``job_id``'s terminal status body (see the module docstring for raises).

        ``ctx``: the job's hook context (``status_changed``, ``retried``, ``rate_limited``).
        ``fallback=(after, every)``: a webhook is expected (:meth:`deliver` ends the wait);
        plain status looks start after ``after`` seconds and repeat every ``every``."""
        if self._handing_off:
            raise HandedOff(job_id)
        loop = asyncio.get_running_loop()
        w = Watch(task_id, handle, job_id, sink is not None, sink, deadline, deadline_kind, loop.create_future())
        w.interval = self.settings.stream_poll_interval if sink is not None else self.settings.poll_interval
        w.ctx = ctx
        first = 0.0
        if fallback is not None:
            first, w.slow = fallback
            early = self.early.pop(task_id, None)
            if early is not None and str(early.get("id", job_id)) == job_id:
                return early
        self.watches.setdefault(task_id, set()).add(w)
        self._schedule_poll(w, first)
        if deadline is not None:
            w.deadline_timer = loop.call_at(deadline, self._expire, w)
        try:
            return await w.future
        finally:
            self._forget(w)

    def deliver(self, task_id: str, body: dict[str, Any]) -> None:
        """A verified webhook for ``task_id`` arrived: end its (non-stream) watches with
        ``body`` when it is terminal. Called on the loop (the webhook waiter's listener)."""
        if not terminal(body):
            return
        watched = self.watches.get(task_id)
        if not watched:
            if len(self.early) < 10000:  # bounded: ended jobs pop theirs, see Gateway
                self.early[task_id] = body
            return
        for w in list(watched):
            if not w.done and not w.stream and str(body.get("id", w.job_id)) == w.job_id:
                status, previous = str(body.get("status")), w.status
                if w.ctx is None or status == previous:
                    self._end(w, body)
                    continue
                w.status = status
                # status_changed first, then the wait ends (observers see events in order)
                task = asyncio.get_running_loop().create_task(self._delivered(w, body, status, previous))
                self._notes.add(task)  # keep a reference until it ran
                task.add_done_callback(self._notes.discard)

    async def _delivered(self, w: Watch, body: dict[str, Any], status: str, previous: str | None) -> None:
        try:
            if w.ctx is not None:
                await self.hooks.anotify("status_changed", w.ctx, status=status, previous=previous)
        finally:
            if not w.done:  # a cancel or deadline that came meanwhile wins
                self._end(w, body)

    def handoff(self) -> None:
        """Stop every wait with HandedOff, leaving remote jobs running (warm shutdown)."""
        self._handing_off = True
        for ws in list(self.watches.values()):
            for w in list(ws):
                self._end(w, exc=HandedOff(w.job_id))

    # -- scheduling ---------------------------------------------------------------------------

    def _schedule_poll(self, w: Watch, delay: float) -> None:
        """Start the next request for ``w`` now, or after ``delay`` on the loop's timer heap."""
        if w.done:
            return
        if delay <= 0:
            w.timer = None
            w.inflight = asyncio.get_running_loop().create_task(self._poll(w))
        else:
            w.timer = asyncio.get_running_loop().call_later(delay, self._schedule_poll, w, 0.0)

    async def _flags_loop(self) -> None:
        """Every ``cancel_check`` seconds while anything is watched: the cancel keys."""
        while True:
            try:
                # One MGET per round; with tens of thousands in flight, rounds stretch to 1 s.
                await asyncio.sleep(min(1.0, max(self.settings.cancel_check, len(self.watches) / 20000)))
                if self.watches or self.handoff_key:
                    await self._check_flags()
            except asyncio.CancelledError:
                raise
            except Exception:  # the poller must survive anything (e.g. Redis blips)
                log.exception("bridge poller: checking cancel keys failed; continuing")
                await asyncio.sleep(0.5)

    async def _check_flags(self) -> None:
        """One MGET per 5,000 watched tasks: cancel keys (and this worker's handoff flag)."""
        self.stats["cancel_checks"] += 1
        if self.handoff_key and not self._handing_off and await self.redis.exists(self.handoff_key):
            self.handoff()
            return
        task_ids = list(self.watches)
        for start in range(0, len(task_ids), 5000):
            chunk = task_ids[start:start + 5000]
            values = await self.redis.mget([keys.cancel(t) for t in chunk])
            for task_id, value in zip(chunk, values, strict=True):
                if value is not None:
                    for w in list(self.watches.get(task_id, ())):
                        self._stop_remote(w, Cancelled("revoked", w.job_id))

    def _expire(self, w: Watch) -> None:
        if w.done:
            return
        if w.deadline_kind == "expired":
            exc: BaseException = Cancelled("expired", w.job_id)
        else:
            exc = errors.Timeout(
                "the task's deadline passed before the job finished; the remote job was cancelled",
                w.job_id, w.handle.endpoint_id, None, None,
            )
        self._stop_remote(w, exc)

    def _stop_remote(self, w: Watch, exc: BaseException) -> None:
        if w.done:
            return
        w.done = True  # no more polls; the future is settled once /cancel was sent
        self._cancel_timers(w)
        if w.inflight is not None:
            w.inflight.cancel()
        asyncio.get_running_loop().create_task(self._cancel_then_end(w, exc))

    async def _cancel_then_end(self, w: Watch, exc: BaseException) -> None:
        try:
            await self.cancel_remote(w.handle, w.task_id, w.job_id)
        finally:
            if not w.future.done():
                w.future.set_exception(exc)

    async def cancel_remote(self, handle: EndpointHandle, task_id: str | None, job_id: str) -> None:
        """POST /cancel once per task (the journal guards it), retrying transient errors."""
        if task_id is not None and not await self.journal.cancel_once(task_id):
            return
        started, attempt = asyncio.get_running_loop().time(), 0
        while True:
            attempt += 1
            try:
                await self.transport.call(handle, handle.wire.cancel(job_id))
                self.stats["cancels_sent"] += 1
                return
            except errors.BridgeError as exc:
                delay = self.cancel_retry.next_delay(attempt, exc, started)
                if delay is None:
                    log.warning("bridge: /cancel of job %s failed: %s", job_id, exc)
                    return
                await asyncio.sleep(delay)

    def _end(self, w: Watch, body: dict[str, Any] | None = None, exc: BaseException | None = None) -> None:
        w.done = True
        self._cancel_timers(w)
        if w.inflight is not None and w.inflight is not asyncio.current_task():
            w.inflight.cancel()
        if not w.future.done():
            if exc is not None:
                w.future.set_exception(exc)
            else:
                w.future.set_result(body or {})

    def _cancel_timers(self, w: Watch) -> None:
        for timer in (w.timer, w.deadline_timer):
            if timer is not None:
                timer.cancel()
        w.timer = w.deadline_timer = None

    def _forget(self, w: Watch) -> None:
        w.done = True
        self._cancel_timers(w)
        if w.inflight is not None and w.inflight is not asyncio.current_task():
            w.inflight.cancel()
        ws = self.watches.get(w.task_id)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del self.watches[w.task_id]

    # -- one poll -----------------------------------------------------------------------------

    async def _poll(self, w: Watch) -> None:
        h, s = w.handle, self.settings
        loop = asyncio.get_running_loop()
        long_poll = not w.stream and w.slow is None and h.long_poll_ok and s.long_poll > 0
        try:
            w.polls += 1
            self.stats["polls"] += 1
            if w.stream:
                call = h.wire.stream(w.job_id)
            elif long_poll:
                wait = s.long_poll
                if w.deadline is not None:
                    wait = max(0.5, min(wait, w.deadline - loop.time() + 0.5))
                unknown_until = _unknown_until(w)
                if unknown_until is not None:  # answer by the time an unknown status runs out
                    wait = max(0.5, min(wait, unknown_until - time.monotonic()))
                call = h.wire.status(w.job_id, wait=wait)
            else:
                call = h.wire.status(w.job_id)
            body = await self.transport.call(h, call)
        except asyncio.CancelledError:
            w.inflight = None
            raise
        except errors.BridgeError as exc:
            w.inflight = None
            if long_poll and isinstance(exc, errors.EndpointError) and exc.status_code in (404, 405):
                h.long_poll_ok = False  # no /status-sync here: plain polls from now on
                self._schedule_poll(w, 0.0)
            elif isinstance(exc, errors.RETRYABLE) and not w.done:
                now = loop.time()
                w.err_since = w.err_since or now
                if now - w.err_since > s.poll_error_deadline:
                    self._end(w, exc=exc)
                else:
                    w.interval = min(s.poll_max_interval, max(w.interval * 2, s.poll_interval))
                    retry_after = getattr(exc, "retry_after", None)
                    delay = max(w.slow or w.interval, retry_after or 0.0)
                    self._schedule_poll(w, delay)
                    if w.ctx is not None:
                        if isinstance(exc, errors.RateLimited):
                            await self.hooks.anotify("rate_limited", w.ctx, route=call.route,
                                                     retry_after=retry_after)
                        await self.hooks.anotify("retried", w.ctx, error=exc, delay=delay)
            else:
                self._end(w, exc=exc)
            return
        w.inflight = None
        w.err_since = None
        if w.done:
            return
        status = body.get("status")
        if isinstance(status, str) and status != w.status:
            previous, w.status = w.status, status
            if w.ctx is not None:
                await self.hooks.anotify("status_changed", w.ctx, status=status, previous=previous)
        if not terminal(body) and self._unknown_too_long(w, status):
            return
        if w.stream:
            await self._stream_round(w, body)
        elif terminal(body):
            self._end(w, body)
        else:
            if long_poll:
                delay = 0.0
            elif w.slow is not None:
                delay = w.slow
            else:
                delay = w.interval
                w.interval = min(s.poll_max_interval, w.interval * 1.5)
            self._schedule_poll(w, _until_unknown_ends(w, delay))

    def _unknown_too_long(self, w: Watch, status: object) -> bool:
        """Time a status outside RunPod's set (the clock logs it once, with the job id); True
        when it has lasted BRIDGE_UNKNOWN_STATUS_TIMEOUT and the wait ended with UnknownStatus."""
        if w.clock is None and is_known_status(status):
            return False
        try:
            if w.clock is None:  # reads BRIDGE_UNKNOWN_STATUS_TIMEOUT (a bad value fails this job)
                w.clock = UnknownStatusClock(w.job_id, w.handle.endpoint_id, logger=log)
            w.clock.observe(status)
        except errors.BridgeError as exc:  # UnknownStatus, or ConfigurationError
            self._end(w, exc=exc)
            return True
        return False

    async def _stream_round(self, w: Watch, body: dict[str, Any]) -> None:
        chunks = body.get("stream") or []
        if not isinstance(chunks, list):
            self._end(w, exc=errors.MalformedResponse(
                "/stream answered a 'stream' that is not a list", w.job_id, w.handle.endpoint_id))
            return
        if chunks:
            assert w.sink is not None
            await w.sink([c.get("output") if isinstance(c, dict) else c for c in chunks])
        if terminal(body) and not chunks:
            self._end(w, body)
            return
        if chunks:
            w.interval = self.settings.stream_poll_interval
        delay = 0.0 if chunks else w.interval
        w.interval = min(2.0, w.interval * 1.5)
        self._schedule_poll(w, _until_unknown_ends(w, delay))


def _unknown_until(w: Watch) -> float | None:
    """The monotonic time ``w``'s unknown status runs out, while it shows one."""
    return None if w.clock is None else w.clock.deadline()


def _until_unknown_ends(w: Watch, delay: float) -> float:
    """``delay``, shortened so the look after an unknown status's limit is not late."""
    until = _unknown_until(w)
    return delay if until is None else max(0.0, min(delay, until - time.monotonic()))
