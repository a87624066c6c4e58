"""What the local endpoint knows about real runpod workers, and what their jobs become.

One :class:`WorkerHost` per endpoint run by worker processes; the routes of
:mod:`bridge.local.worker_api` call it on the server's event loop.

Jobs come from the endpoint's :class:`~bridge.local.jobs.JobStore` through its runner API, so
they keep the states, errors and stream semantics of in-process handlers:

- a take starts the job (IN_QUEUE → IN_PROGRESS) and records which worker holds it;
- job-done ``{"status": "IN_PROGRESS", "output": v}`` is a progress update; any other body
  finishes the job: ``error`` → FAILED (with ``output`` when the worker sent one), else
  COMPLETED; ``stopPod`` (``refresh_worker``) marks the worker as about to be recycled;
- ``/cancel``, ``executionTimeout`` and ``ttl`` reach the worker on its job-stop poll, so an
  async handler sees ``asyncio.CancelledError`` (a sync handler cannot be interrupted: it
  runs on, and its late result is dropped, as on RunPod);
- a result, chunk or progress update for a job this worker no longer holds is acknowledged
  (200, so the SDK does not retry) and dropped.

**Lost workers.** A worker whose process exits (the supervisor calls :meth:`WorkerHost.retire`)
or that stops pinging for ``lost_after`` seconds (3 ping intervals by default, counted from
its first ping, so a slow model load is not "lost") loses its running jobs: they end
**TIMED_OUT**, which is how RunPod reports a job whose "worker failed to report back before
reaching the timeout threshold" (docs, job states). They are not requeued, because the
handler may have had side effects; ``POST /retry/{id}`` runs them again, as on RunPod. The
silent worker is then handed to ``on_lost`` (the supervisor kills and restarts it).

**Worker states** (``/health`` ``workers``): ``initializing`` (started, not heard from yet),
``idle`` (up, no job), ``running`` (holding at least one job, by our records or by its
latest ping), ``unhealthy`` (stopped pinging, or crash-looping and waiting to be restarted),
``throttled`` (always 0), and ``ready``: the idle workers waiting in a job-take poll right
now, that is, able to start a job the moment it arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.local.jobs import MISSING, JobStore, LocalJob

log = logging.getLogger(__name__)

#: How often a waiting job-take looks at its connection and at shutdown (seconds). Costs no
#: HTTP traffic: it only bounds how long a dead worker's poll can hold on to a new job.
_SLICE = 0.5

#: A stop signal is sent again (up to this many times, this many seconds apart) until the
#: worker reports the job gone: a stop that reaches the SDK before it has registered the
#: job's task (right after the take) is otherwise ignored by it.
_STOP_DELIVERIES, _STOP_REDELIVER = 5, 1.0


@dataclass(eq=False)
class WorkerRecord:
    """What the endpoint knows about one worker process (or one external worker)."""

    worker_id: str
    registered_at: float = field(default_factory=time.monotonic)
    first_contact: float | None = None
    last_ping: float | None = None
    #: Jobs the endpoint assigned to this worker that have not ended yet.
    jobs: dict[str, LocalJob] = field(default_factory=dict)
    #: Job ids the worker itself reported in its latest ping (it may still be running a job
    #: the endpoint already cancelled: a sync handler cannot be interrupted).
    reported: set[str] = field(default_factory=set)
    open_takes: int = 0
    #: Jobs this worker must stop: job id -> [next delivery time, deliveries left].
    stop_pending: dict[str, list[float]] = field(default_factory=dict)
    stop_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    unhealthy: bool = False
    refreshing: bool = False
    retired: bool = False
    #: Started by our supervisor (False: a worker that registered itself on first contact).
    supervised: bool = True
    taken: int = 0

    @property
    def state(self) -> str:
        if self.unhealthy:
            return "unhealthy"
        if self.first_contact is None:
            return "initializing"
        if self.jobs or self.reported:
            return "running"
        return "idle"


class WorkerHost:
    """The worker side of one endpoint: which workers exist, which jobs they hold.

    Routes and the supervisor call it on the server's event loop. ``hold`` is how long the
    job-take and job-stop polls wait before answering 204; ``lost_after`` how long a worker
    may go without pinging once it has pinged (default: 3 × ``ping_interval``).
    """

    def __init__(
        self,
        store: JobStore,
        *,
        token: str | None = None,
        hold: float = 30.0,
        ping_interval: float = 10.0,
        lost_after: float | None = None,
        on_lost: Callable[[str], Any] | None = None,
        on_refresh: Callable[[str], Any] | None = None,
        accept_unknown: bool = True,
    ) -> None:
        self.store = store
        self.endpoint_id = store.endpoint_id
        self.token = token or secrets.token_urlsafe(24)
        self.hold = float(hold)
        self.ping_interval = float(ping_interval)
        self.lost_after = float(lost_after) if lost_after is not None else 3 * self.ping_interval
        self.on_lost = on_lost
        #: Called with a worker id after a job asked for ``refresh_worker`` (stopPod): the
        #: platform, not the SDK, recycles the worker then.
        self.on_refresh = on_refresh
        #: Whether a worker id we did not start may register itself on first contact (a
        #: worker run by hand or in a container, pointed at this endpoint with the token).
        self.accept_unknown = accept_unknown
        self.workers: dict[str, WorkerRecord] = {}
        self._retired: set[str] = set()
        self.closing = False
        #: Worker requests received, in all and per route (job-take, job-stop, ping, ...).
        self.requests = 0
        self.route_counts: Counter[str] = Counter()
        self._watchdog: asyncio.Task[None] | None = None
        self._refuser: asyncio.Task[None] | None = None

    # -- lifecycle (supervisor) --------------------------------------------------------

    def start(self) -> None:
        """Start watching pings (call on the server's loop)."""
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        """Answer every open poll at once and stop watching (server shutdown)."""
        self.closing = True
        for record in self.workers.values():
            record.stop_wakeup.set()
        for task in (self._watchdog, self._refuser):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._watchdog = self._refuser = None

    def refuse_jobs(self, message: str) -> None:
        """No worker will ever run: end queued and new jobs FAILED with ``message`` rather
        than leave them IN_QUEUE (the supervisor gave up starting its workers)."""
        if self._refuser is None and not self.closing:
            self._refuser = asyncio.get_running_loop().create_task(self._refuse(message))

    async def _refuse(self, message: str) -> None:
        while not self.closing:
            job = await self.store.take(_SLICE)
            if job is not None and self.store.start(job):
                self.store.finish(job, MISSING, message)

    def register(self, worker_id: str) -> WorkerRecord:
        """A worker process is being started under ``worker_id``."""
        record = WorkerRecord(worker_id)
        self.workers[worker_id] = record
        return record

    def retire(self, worker_id: str, reason: str) -> list[str]:
        """The worker is gone (its process exited): its running jobs end TIMED_OUT.

        Returns the ids of the jobs that were lost. ``reason`` says what happened, for the
        jobs' ``error`` text (e.g. "exited with code -9").
        """
        record = self.workers.pop(worker_id, None)
        self._retired.add(worker_id)
        if record is None:
            return []
        record.retired = True
        record.stop_wakeup.set()
        return self._lose_jobs(record, f"worker {worker_id} {reason} while running the job")

    def mark_unhealthy(self, worker_id: str, unhealthy: bool = True) -> None:
        record = self.workers.get(worker_id)
        if record is not None:
            record.unhealthy = unhealthy

    def counts(self) -> dict[str, int]:
        """The ``workers`` object of ``/health``."""
        counts = {"idle": 0, "running": 0, "initializing": 0, "ready": 0, "throttled": 0, "unhealthy": 0}
        for record in self.workers.values():
            state = record.state
            counts[state] += 1
            if state == "idle" and record.open_takes > 0:
                counts["ready"] += 1
        return counts

    @property
    def running_jobs(self) -> int:
        return sum(len(r.jobs) for r in self.workers.values())

    # -- helpers -----------------------------------------------------------------------

    def _record(self, worker_id: str) -> WorkerRecord | None:
        record = self.workers.get(worker_id)
        if record is None and self.accept_unknown and not self.closing and worker_id not in self._retired:
            log.info("endpoint %s: worker %s registered itself", self.endpoint_id, worker_id)
            record = self.register(worker_id)
            record.supervised = False
        if record is not None and record.first_contact is None:
            record.first_contact = time.monotonic()
        return record

    def _lose_jobs(self, record: WorkerRecord, message: str) -> list[str]:
        lost = []
        for job in list(record.jobs.values()):
            if self.store.time_out(job, message):
                lost.append(job.id)
        record.jobs.clear()
        if lost:
            log.warning("endpoint %s: %s; jobs %s TIMED_OUT", self.endpoint_id, message, ", ".join(lost))
        return lost

    def _assign(self, record: WorkerRecord, job: LocalJob) -> None:
        record.jobs[job.id] = job
        record.taken += 1

        def on_stop(reason: str) -> None:
            # The store already ended the job (CANCELLED / TIMED_OUT / expired): tell the
            # worker on its job-stop poll, and stop counting the job as ours.
            if record.jobs.get(job.id) is job:
                del record.jobs[job.id]
            if not record.retired:
                record.stop_pending[job.id] = [time.monotonic(), _STOP_DELIVERIES]
                record.stop_wakeup.set()

        self.store.on_stop(job, on_stop)

    def _holds(self, record: WorkerRecord, job_id: str) -> LocalJob | None:
        return record.jobs.get(job_id)

    async def _watch(self) -> None:
        # Ping-silence detection; pings come from the SDK's separate heartbeat process, so a
        # sync handler that blocks the worker's event loop still pings.
        period = max(0.2, min(self.ping_interval, self.lost_after) / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for record in list(self.workers.values()):
                if record.unhealthy or record.last_ping is None:
                    continue
                if now - record.last_ping > self.lost_after:
                    silent = now - record.last_ping
                    record.unhealthy = True
                    self._lose_jobs(record, f"worker {record.worker_id} stopped pinging ({silent:.1f} s)")
                    if not record.supervised:
                        self.retire(record.worker_id, "stopped pinging")  # nobody to restart it
                    elif self.on_lost is not None:
                        self.on_lost(record.worker_id)

    # -- the protocol ------------------------------------------------------------------

    async def take(self, record: WorkerRecord, batch_size: int, gone: Callable[[], bool]) -> list[LocalJob]:
        """Wait up to ``hold`` for a job; then take up to ``batch_size`` that are ready.

        ``gone()`` says whether the poll's connection has closed (then nobody would read
        the answer, and a job taken meanwhile goes back to the queue).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold
        if record.refreshing:
            # Being recycled (SIGTERM is on its way): no more jobs. A short pause, so that a
            # worker that has not seen the signal yet re-polls slowly rather than spins.
            await asyncio.sleep(_SLICE)
            return []
        record.open_takes += 1
        try:
            while not (self.closing or record.retired or record.unhealthy or record.refreshing):
                remaining = deadline - loop.time()
                if remaining <= 0 or gone():
                    return []
                job = await self.store.take(min(remaining, _SLICE))
                if job is None:
                    continue
                if gone() or self.closing or record.retired:
                    # Nobody will read the answer: hand the job to the next taker.
                    self.store.release(job)
                    return []
                if not self.store.start(job):
                    continue  # cancelled, purged or expired while queued
                self._assign(record, job)
                jobs = [job]
                while len(jobs) < batch_size:
                    extra = await self.store.take(0)
                    if extra is None:
                        break
                    if self.store.start(extra):
                        self._assign(record, extra)
                        jobs.append(extra)
                return jobs
            return []
        finally:
            record.open_takes -= 1

    async def stop_signals(self, record: WorkerRecord) -> list[str]:
        """Wait up to ``hold`` for jobs this worker must stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold
        while not (self.closing or record.retired or record.refreshing):
            now = time.monotonic()
            due = [job_id for job_id, (at, _left) in record.stop_pending.items() if at <= now]
            if due:
                for job_id in due:
                    entry = record.stop_pending[job_id]
                    entry[0], entry[1] = now + _STOP_REDELIVER, entry[1] - 1
                    if entry[1] <= 0:
                        del record.stop_pending[job_id]
                return due
            wait = deadline - loop.time()
            if record.stop_pending:
                wait = min(wait, min(at for at, _left in record.stop_pending.values()) - now)
            if wait <= 0 and not record.stop_pending:
                return []
            record.stop_wakeup.clear()
            try:
                await asyncio.wait_for(record.stop_wakeup.wait(), max(wait, 0.0))
            except asyncio.TimeoutError:
                if loop.time() >= deadline:
                    return []
        return []

    def done(self, record: WorkerRecord, job_id: str, body: dict[str, Any]) -> str:
        """A job-done body: a progress update, or the job's result. Returns what happened."""
        job = self._holds(record, job_id)
        if body.get("status") == "IN_PROGRESS":
            if job is None:
                return "dropped: progress for a job this worker does not hold"
            self.store.progress(job, body.get("output"))
            return "progress"
        record.reported.discard(job_id)
        record.stop_pending.pop(job_id, None)
        if body.get("stopPod") and not record.refreshing:
            # refresh_worker: RunPod recycles the worker after this job (the SDK itself only
            # exits when refresh_worker is in its start() config). The supervisor stops the
            # process and starts a fresh one.
            record.refreshing = True
            record.stop_wakeup.set()  # its open job-stop poll must not hold up its exit
            if self.on_refresh is not None:
                asyncio.get_running_loop().call_soon(self.on_refresh, record.worker_id)
        if job is None:
            return "dropped: result for a job this worker does not hold (cancelled, timed out or lost)"
        del record.jobs[job_id]
        output, error = worker_result(body)
        if not self.store.finish(job, output, error):
            return "dropped: the job had already ended"
        return "FAILED" if error is not None else "COMPLETED"

    def reject(self, record: WorkerRecord, job_id: str, message: str) -> None:
        """A worker's result or chunk could not be accepted: the job fails with ``message``.

        (RunPod answers 400 too, and the job then shows COMPLETED without output,
        runpod-python#309; failing it says what happened.)
        """
        job = record.jobs.pop(job_id, None)
        if job is not None and self.store.finish(job, MISSING, message):
            log.warning("endpoint %s worker %s job %s: %s", self.endpoint_id, record.worker_id, job_id, message)

    def stream(self, record: WorkerRecord, job_id: str, body: dict[str, Any]) -> str:
        job = self._holds(record, job_id)
        if job is None:
            return "dropped: chunk for a job this worker does not hold"
        self.store.add_chunk(job, body.get("output"))
        return "chunk"

    def ping(self, record: WorkerRecord, job_ids: str | None) -> None:
        now = time.monotonic()
        record.last_ping = now
        record.reported = {j for j in (job_ids or "").split(",") if j}
        for job_id, (at, left) in list(record.stop_pending.items()):
            # Delivered at least once, some time ago, and the worker no longer runs it: done.
            if left < _STOP_DELIVERIES and now - at > _STOP_REDELIVER and job_id not in record.reported:
                del record.stop_pending[job_id]


def worker_result(body: dict[str, Any]) -> tuple[Any, str | None]:
    """(output, error) from a worker's job-done body (the SDK already shaped it, §9)."""
    output = body.get("output", MISSING)
    error = body.get("error")
    if error is None or error == "":
        return output, None
    # The SDK forwards a non-string error as is; RunPod then shows COMPLETED with no output
    # (runpod-python#299). bridge fails the job with the JSON text instead, like its
    # in-process runner, so the error is not lost.
    text = error if isinstance(error, str) else json.dumps(error, default=str)
    return output, text
