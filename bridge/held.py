"""Held job tasks: a bridge job task's message waits in the worker's main process while its
remote job runs, and no pool slot (process, thread or greenlet) is taken.

One :class:`HeldJobs` per worker process, fed by :mod:`bridge.strategy`. Its thread,
``bridge-held``, receives and starts job tasks in order; a wait that ends goes straight
from the gateway loop to one of a few ``bridge-complete`` threads, which complete it and
start parked jobs (the registry is shared under a lock):

- **receive**: a job message arrives (the consumer raised its QoS by one for it, the way
  Celery does for ETA tasks, so held jobs never shrink the app's prefetch window). A
  redelivery of a task id already held (a broker reconnect requeues unacked messages)
  re-attaches to the held job: no second wait, no second result. Past the cap
  (``BRIDGE_MAX_HELD_JOBS``) the message is parked, unstarted, until a held job ends.
- **start**: the request is accepted (``task_accepted``: ``inspect active`` lists it with
  ``worker_pid`` = this process; the ``task-started`` event), the task's start checks run
  (:func:`bridge.tasks.plan_held`), and the wait is handed to the gateway's event loop.
- **complete**: when the wait ends, the request runs through Celery's own execution
  (``Request.execute_using_pool`` with :class:`bridge.strategy.InlinePool`): the task body
  finds its :class:`Outcome` ready (:func:`outcome_for`) and returns or raises it; the
  tracer stores the result, sends callbacks, chord parts, signals and events, and acks.

Completing in these threads rather than in the pool keeps completions from queueing behind
the app's long tasks, and rather than on the consumer's thread keeps the consumer's loop
free (acks still reach it through ``hub.call_soon``, as Celery's own pools do).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import TaskRevokedError
from celery.worker.state import reserved_requests, task_ready

from bridge.config import env_int
from bridge.per_process import PerProcess

log = logging.getLogger("bridge.worker")

COMPLETION_THREADS = max(1, env_int("BRIDGE_COMPLETION_THREADS", 4))


@dataclass
class Outcome:
    """How a held job ended, as its task body will return or raise it.

    ``kind``: ``result`` (``value`` is returned), ``error`` (``value`` is raised),
    ``cancelled`` (``value`` is the reason: REVOKED, never a later SUCCESS), ``done``
    (already stored by an earlier delivery: ack only), ``handoff`` (warm shutdown: the
    message goes back to the broker, the remote job keeps running), ``plain`` (no
    outcome: the tracer runs the body, e.g. to fail on bad arguments)."""

    kind: str
    value: Any = None


@dataclass
class Held:
    """A held job: its current request (the latest delivery) and the QoS it raised."""

    req: Any
    qos: Any
    extras: list[tuple[Any, Any]] = field(default_factory=list)  # older deliveries to ack
    completing: bool = False  # its outcome is being stored (on a completion thread)


def max_held_jobs() -> int:
    """``BRIDGE_MAX_HELD_JOBS`` (default 10,000): jobs one worker process holds at once."""
    return max(1, env_int("BRIDGE_MAX_HELD_JOBS", 10_000))


class HeldJobs:
    """This worker process's held job tasks (see the module docstring)."""

    def __init__(self, cap: int | None = None) -> None:
        self.cap = cap or max_held_jobs()
        self.held: dict[str, Held] = {}
        self.parked: deque[tuple[Any, Any]] = deque()
        self.outcomes: dict[str, Outcome] = {}
        self.stats = {"held": 0, "parked": 0, "reattached": 0, "completed": 0}
        self._inbox: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()  # (request, QoS)
        # The registry is changed by the bridge-held thread (receive, start) and the
        # completion threads (forget, start parked jobs).
        self._lock = threading.RLock()
        self._parked_n = 0  # read by the consumer's thread (an int: no lock needed)
        # Completions run Celery's tracer, whose result store is a few blocking Redis round
        # trips: a few threads overlap them (the GIL is released while they wait).
        self._completers = ThreadPoolExecutor(COMPLETION_THREADS, thread_name_prefix="bridge-complete")
        self._thread = threading.Thread(target=self._serve, name="bridge-held", daemon=True)
        self._thread.start()

    # -- other threads ----------------------------------------------------------------------

    def receive(self, req: Any, consumer: Any) -> None:
        """The consumer's thread: a job message was received; hold it."""
        qos = consumer.qos
        # Parked messages raise the QoS too, so the app's tasks keep flowing past the cap;
        # beyond another cap's worth they no longer do and the window slows the consumer.
        counted = self._parked_n < self.cap
        if counted:
            qos.increment_eventually()
        self._inbox.put((req, qos if counted else None))

    # -- the bridge-held thread -------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            req, qos = self._inbox.get()
            try:
                with self._lock:
                    self._receive(req, qos)
            except Exception:  # one bad message must not stop every held job
                log.exception("bridge: holding %s[%s] failed", req.name, req.id)

    def _receive(self, req: Any, qos: Any) -> None:
        current = self.held.get(req.id)
        if current is not None:
            self._reattach(current, req, qos)
        elif len(self.held) >= self.cap:
            self.parked.append((req, qos))
            self._parked_n = len(self.parked)
            self.stats["parked"] += 1
        else:
            self._start(req, qos)

    def _reattach(self, held: Held, req: Any, qos: Any) -> None:
        """A second delivery of a held task id (broker reconnect, duplicate publish): the
        new message becomes the one acked at completion; the older one is acked too if its
        channel still lives, and no second wait starts."""
        if held.completing:  # its outcome is being stored: ack this one with it
            held.extras.append((req, qos))
            return
        old = held.req
        held.extras.append((old, held.qos))
        held.req, held.qos = req, qos
        task_ready(old)
        req.bridge_held = True
        req.on_accepted(os.getpid(), time.monotonic())
        self.stats["reattached"] += 1
        log.info("bridge: %s[%s] redelivered while held; re-attached to its remote job", req.name, req.id)

    def _start(self, req: Any, qos: Any) -> None:
        if req.revoked():  # revoked while parked: Celery announced and acked it
            _release(qos)
            return
        from bridge.tasks import plan_held

        req.bridge_held = True
        req.on_accepted(os.getpid(), time.monotonic())
        held = self.held[req.id] = Held(req, qos)
        self.stats["held"] += 1
        try:
            plan = plan_held(req)
        except Exception as exc:  # the start checks failed (e.g. Redis down): fail the task
            plan = Outcome("error", exc)
        if isinstance(plan, Outcome):
            self._complete(held, plan)
            return
        from bridge.gateway.core import get_gateway

        task_id = req.id
        # Straight from the gateway loop to a completion thread: one hand-off, not two.
        def ended(done: Any) -> None:
            self._completers.submit(self._done, task_id, done)

        get_gateway().spawn(plan, ended)

    def _done(self, task_id: str, done: Any) -> None:
        """A completion thread: the wait of ``task_id`` ended."""
        with self._lock:
            held = self.held.get(task_id)
            if held is None:
                return
            held.completing = True
        if done.cancelled():
            outcome = Outcome("handoff")
        else:
            exc = done.exception()
            # the plans' coroutines resolve to an Outcome; anything else is a failure
            outcome = done.result() if exc is None else Outcome("error", exc)
        self._store(held.req, outcome)
        self._finished(held)

    def _complete(self, held: Held, outcome: Outcome) -> None:
        """An outcome known at the start (no wait): stored on a completion thread."""
        held.completing = True

        def complete() -> None:
            self._store(held.req, outcome)
            self._finished(held)

        self._completers.submit(complete)

    def _store(self, req: Any, outcome: Outcome) -> None:
        """A completion thread: the request's outcome through Celery's execution."""
        try:
            if outcome.kind == "done":
                req.acknowledge()
                task_ready(req)
            elif outcome.kind == "handoff":
                req.reject(requeue=True)
                task_ready(req)
            else:
                self.outcomes[req.id] = outcome
                try:
                    req.execute_using_pool(None)  # the request class is bound to InlinePool
                except TaskRevokedError:
                    pass  # revoked while held: Celery stored REVOKED and acked
                finally:
                    self.outcomes.pop(req.id, None)
        except Exception:
            log.exception("bridge: completing %s[%s] failed", req.name, req.id)
            # Never left "active" with nobody running it: no heartbeat renews its message,
            # which comes back by the visibility timeout and resumes its job.
            task_ready(req)

    def _finished(self, held: Held) -> None:
        """After the store: forget the job, ack older deliveries, make room."""
        with self._lock:
            self.held.pop(held.req.id, None)
            self.stats["completed"] += 1
            extras, held.extras = held.extras, []
            for old, qos in extras:
                if _channel_open(old):
                    old.acknowledge()
                task_ready(old)
                _release(qos)
            _release(held.qos)
            self._start_parked()

    def _start_parked(self) -> None:
        while self.parked and len(self.held) < self.cap:
            req, qos = self.parked.popleft()
            self._parked_n = len(self.parked)
            if req not in reserved_requests:  # dropped by a broker reconnect: it comes back
                _release(qos)
                continue
            self._start(req, qos)


def _release(qos: Any) -> None:
    if qos is not None:
        qos.decrement_eventually()


def _channel_open(req: Any) -> bool:
    channel = getattr(getattr(req, "message", None), "channel", None)
    if channel is None or getattr(channel, "closed", False):
        return False
    return bool(getattr(channel, "is_open", True))


_jobs: PerProcess[HeldJobs] = PerProcess(HeldJobs)


def held_jobs() -> HeldJobs:
    """This process's :class:`HeldJobs` (made on first use, in the worker's main process)."""
    return _jobs.get()


def current() -> HeldJobs | None:
    """The process's held jobs if any were ever held (the worker step reads it)."""
    return _jobs.current()


def outcome_for(task_id: str | None) -> Outcome | None:
    """The ready outcome of held task ``task_id`` while it completes, else None (the task
    body then runs the blocking path)."""
    jobs = current()
    if jobs is None or task_id is None:
        return None
    return jobs.outcomes.get(task_id)
