"""The local endpoint's job store: one per endpoint, the single owner of every job's state.

The HTTP routes read and change jobs only through this store, and so does whatever
*executes* jobs. Execution is pluggable: the in-process :class:`bridge.local.runner.HandlerRunner`
is one runner; a runner that hands jobs to external worker processes (real runpod workers
polling job-take/job-done over HTTP) uses the same calls. All methods run on the server's
event loop (call them from another thread with ``loop.call_soon_threadsafe``).

Runner API (the seam)::

    job = await store.take(timeout)     # next queued job (FIFO, lowPriority last) or None
    ok = store.start(job)               # IN_QUEUE -> IN_PROGRESS; False if it was cancelled,
                                        # purged or expired meanwhile (then drop it)
    store.on_stop(job, callback)        # callback(reason) when the job must stop running:
                                        # reason is "CANCELLED", "TIMED_OUT" or "EXPIRED"
    store.add_chunk(job, chunk)         # a generator's yield: /stream drains these
    store.progress(job, value)          # progress update: /status shows it as output
    store.finish(job, output=..., error=None)
                                        # COMPLETED, or FAILED when error is given;
                                        # False if the job had already ended (cancelled,
                                        # timed out): drop the late result
    Values that cannot be sent as JSON (NaN, Infinity, a set, ...) are refused here: such
    an output or chunk ends the job FAILED saying why (a chunk also stops the job with
    reason "FAILED"); such a progress update is dropped with a warning.
    store.time_out(job, message)        # end a running job TIMED_OUT (e.g. its worker died)
    store.release(job)                  # give back a taken, not started job (head of queue)
    job.payload()                       # the dict a handler receives ({"id","input",...})
    job.stopped                         # True once a stop was requested

The store itself enforces the policies: ``executionTimeout`` (TIMED_OUT and a stop signal
when the job has run too long), ``ttl`` (the job is deleted, whatever its state, and
routes answer 404) and result retention (terminal jobs are deleted after it). Terminal
jobs are announced to ``store.terminal_listeners`` (webhooks use this).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.local.bodies import json_problem
from bridge.local.record import MISSING, LocalJob

__all__ = ["MISSING", "Counters", "JobStore", "LocalJob"]

log = logging.getLogger(__name__)

@dataclass
class Counters:
    completed: int = 0
    failed: int = 0
    retried: int = 0
    submitted: int = 0


class JobStore:
    """Jobs of one endpoint: the queue, their states, timers and waiters."""

    def __init__(self, endpoint_id: str) -> None:
        self.endpoint_id = endpoint_id
        self.jobs: dict[str, LocalJob] = {}
        self.counters = Counters()
        self.terminal_listeners: list[Callable[[LocalJob], Any]] = []
        # (enqueue number, job): a cancelled-then-retried job leaves a stale entry behind,
        # which the number tells apart from the live one.
        self._queue: deque[tuple[int, LocalJob]] = deque()
        self._low: deque[tuple[int, LocalJob]] = deque()
        self._queued = 0
        self._running = 0
        self._idempotency: dict[str, str] = {}
        self._seq = itertools.count(1)
        self._has_work = asyncio.Event()
        self.closed = False

    # -- submission and lookup (routes) ------------------------------------------------

    def submit(self, job: LocalJob) -> LocalJob:
        """Queue a new job (or return the existing one for a known idempotency key)."""
        if job.idempotency_key is not None:
            known = self.by_idempotency_key(job.idempotency_key)
            if known is not None:
                return known
            self._idempotency[job.idempotency_key] = job.id
        self.jobs[job.id] = job
        self.counters.submitted += 1
        self._enqueue(job)
        self._timer(job, "ttl", job.ttl, self._expire)
        return job

    def new_id(self, sync: bool) -> str:
        return f"{'sync-' if sync else ''}{uuid.uuid4()}-u{next(self._seq)}"

    def get(self, job_id: str) -> LocalJob | None:
        return self.jobs.get(job_id)

    def by_idempotency_key(self, key: str) -> LocalJob | None:
        job_id = self._idempotency.get(key)
        return self.jobs.get(job_id) if job_id else None

    @property
    def in_queue(self) -> int:
        return self._queued

    @property
    def in_progress(self) -> int:
        return self._running

    # -- the runner seam ---------------------------------------------------------------

    async def take(self, timeout: float | None = None) -> LocalJob | None:
        """The next queued job, waiting up to ``timeout`` seconds (forever when None)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            job = self._pop()
            if job is not None:
                return job
            self._has_work.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._has_work.wait(), remaining)
            except asyncio.TimeoutError:
                return None

    def start(self, job: LocalJob) -> bool:
        if job.status != "IN_QUEUE" or self.jobs.get(job.id) is not job:
            return False
        job.status = "IN_PROGRESS"
        job.started_at = time.monotonic()
        job.attempts += 1
        self._queued -= 1
        self._running += 1
        self._timer(job, "exec", job.execution_timeout, self._time_out)
        self._notify(job)
        return True

    def on_stop(self, job: LocalJob, callback: Callable[[str], Any]) -> None:
        job._stop_callbacks.append(callback)

    def add_chunk(self, job: LocalJob, chunk: Any) -> None:
        if job.status == "IN_PROGRESS":
            problem = json_problem(chunk)
            if problem is not None:
                self._end(job, "FAILED", MISSING, f"stream chunk {len(job.chunks)} cannot be sent as JSON: {problem}")
                self._signal_stop(job, "FAILED")
                return
            job.chunks.append(chunk)
            self._notify(job)

    def progress(self, job: LocalJob, value: Any) -> None:
        if job.status == "IN_PROGRESS":
            problem = json_problem(value)
            if problem is not None:
                log.warning("job %s: progress update dropped, it cannot be sent as JSON: %s", job.id, problem)
                return
            job.progress = value
            self._notify(job)

    def finish(self, job: LocalJob, output: Any = MISSING, error: str | None = None) -> bool:
        if job.status != "IN_PROGRESS":
            return False
        problem = None if output is MISSING else json_problem(output)
        if problem is not None:  # a handler's own error text is kept; its output cannot be
            output = MISSING
            error = error if error is not None else f"the handler's output cannot be sent as JSON: {problem}"
        self._end(job, "FAILED" if error is not None else "COMPLETED", output, error)
        return True

    def time_out(self, job: LocalJob, message: str) -> bool:
        """End a running job TIMED_OUT (e.g. its worker was lost); False if it had already ended."""
        if job.status != "IN_PROGRESS":
            return False
        self._end(job, "TIMED_OUT", MISSING, message)
        return True

    def release(self, job: LocalJob) -> None:
        """Give back a job that was taken but not started: it goes to the head of its queue."""
        if job.status == "IN_QUEUE" and self.jobs.get(job.id) is job:
            (self._low if job.low_priority else self._queue).appendleft((job.enqueued, job))
            self._has_work.set()

    # -- client operations (routes) ----------------------------------------------------

    def cancel(self, job: LocalJob) -> bool:
        """Cancel a queued or running job; False when it had already ended."""
        if job.terminal:
            return False
        self._end(job, "CANCELLED", MISSING, None)
        return True

    def retry(self, job: LocalJob) -> bool:
        """Requeue a FAILED, TIMED_OUT or CANCELLED job under the same id."""
        if job.status not in ("FAILED", "TIMED_OUT", "CANCELLED"):
            return False
        self._cancel_timer(job, "retention")
        job.output, job.error, job.progress = MISSING, None, MISSING
        job.chunks, job.cursor = [], 0
        job.started_at = job.finished_at = None
        job.queued_at = time.monotonic()
        job.stopped = False
        job._stop_callbacks = []
        self.counters.retried += 1
        self._enqueue(job)
        return True

    def purge(self) -> int:
        """Delete every queued job; running ones carry on."""
        # From the job table, not the deques: a job taken but not yet started counts too.
        queued = [j for j in self.jobs.values() if j.status == "IN_QUEUE"]
        self._queue.clear()
        self._low.clear()
        for job in queued:
            self._delete(job)
        return len(queued)

    async def wait(self, job: LocalJob, timeout: float, *, for_chunks: bool = False) -> None:
        """Wait until ``job`` is terminal (or has unread chunks), deleted, or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not job.terminal and not self.closed and self.jobs.get(job.id) is job:
            if for_chunks and job.cursor < len(job.chunks):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            event = job._changed
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def close(self) -> None:
        """Stop everything (server shutdown): timers off, running jobs told to stop."""
        self.closed = True
        for job in list(self.jobs.values()):
            self._notify(job)
            for handle in job._timers.values():
                handle.cancel()
            job._timers.clear()
            if job.status == "IN_PROGRESS":
                self._signal_stop(job, "CANCELLED")

    # -- internals ---------------------------------------------------------------------

    def _enqueue(self, job: LocalJob) -> None:
        job.status = "IN_QUEUE"
        job.enqueued += 1
        (self._low if job.low_priority else self._queue).append((job.enqueued, job))
        self._queued += 1
        self._has_work.set()
        self._notify(job)

    def _pop(self) -> LocalJob | None:
        for queue in (self._queue, self._low):
            while queue:
                seq, job = queue.popleft()
                # Cancelled or deleted jobs are left in the deque and skipped here.
                if seq == job.enqueued and job.status == "IN_QUEUE" and self.jobs.get(job.id) is job:
                    return job
        return None

    def _end(self, job: LocalJob, status: str, output: Any, error: str | None) -> None:
        was_running = job.status == "IN_PROGRESS"
        if job.status == "IN_QUEUE":
            self._queued -= 1
        elif was_running:
            self._running -= 1
        job.status, job.output, job.error = status, output, error
        job.finished_at = time.monotonic()
        self._cancel_timer(job, "exec")
        if status == "COMPLETED":
            self.counters.completed += 1
        elif status in ("FAILED", "TIMED_OUT"):
            self.counters.failed += 1
        if was_running and status in ("CANCELLED", "TIMED_OUT"):
            self._signal_stop(job, status)
        self._timer(job, "retention", job.retention, self._delete)
        self._notify(job)
        for listener in self.terminal_listeners:
            listener(job)

    def _signal_stop(self, job: LocalJob, reason: str) -> None:
        job.stopped = True
        callbacks, job._stop_callbacks = job._stop_callbacks, []
        for callback in callbacks:
            callback(reason)

    def _time_out(self, job: LocalJob) -> None:
        self.time_out(job, f"job exceeded its executionTimeout of {int(job.execution_timeout * 1000)} ms")

    def _expire(self, job: LocalJob) -> None:
        if job.status == "IN_PROGRESS":
            self._running -= 1
            self._signal_stop(job, "EXPIRED")
        elif job.status == "IN_QUEUE":
            self._queued -= 1
        job.status = "EXPIRED"  # never shown: the job is deleted right away
        self._delete(job)

    def _delete(self, job: LocalJob) -> None:
        if job.status == "IN_QUEUE":
            self._queued -= 1
        for handle in job._timers.values():
            handle.cancel()
        job._timers.clear()
        if self.jobs.get(job.id) is job:
            del self.jobs[job.id]
        if job.idempotency_key is not None and self._idempotency.get(job.idempotency_key) == job.id:
            del self._idempotency[job.idempotency_key]
        self._notify(job)

    def _timer(self, job: LocalJob, name: str, delay: float, action: Callable[[LocalJob], None]) -> None:
        self._cancel_timer(job, name)
        loop = asyncio.get_running_loop()
        job._timers[name] = loop.call_later(max(0.0, delay), action, job)

    def _cancel_timer(self, job: LocalJob, name: str) -> None:
        handle = job._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _notify(self, job: LocalJob) -> None:
        # Waiters hold the old event; a fresh one is armed for the next change.
        event, job._changed = job._changed, asyncio.Event()
        event.set()
