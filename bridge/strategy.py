"""How a bridge job task's message is received: held in the worker's main process, not run
in a pool slot (``BridgeTask.Strategy``).

Celery lets a task class choose the function that receives its messages; Celery itself
parks ETA tasks in its timer that way. The job tasks wrap Celery's own default strategy
(so parsing, the revoke/expiry check at receipt, ``task_received`` and the
``task-received`` event stay Celery's) and change only its last step: instead of sending
the request to the pool, :func:`hold` hands it to the process's
:class:`bridge.held.HeldJobs`, which waits on the remote job on the gateway's event loop
and then runs the request through Celery's tracer in-process (:class:`InlinePool`), with
the outcome ready. Results, callbacks, chords, signals, events and acks are Celery's.

The blocking path (the task body waits on the gateway in its pool slot) stays where
holding is not possible: a consumer without kombu's event loop (gevent, eventlet,
transports without async support), an app without ``bridge.install(app)``, ``.apply()``
and eager mode.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.concurrency.base import apply_target
from celery.worker.request import Request
from celery.worker.state import task_reserved

log = logging.getLogger("bridge.worker")

_warned_blocking = False


class InlinePool:
    """A pool that runs a request's trace in the calling thread (the held-jobs thread), the
    way Celery's solo pool does; the request was already accepted when it was held, so the
    accept callback is not called again."""

    is_green = False
    num_processes = 1

    def apply_async(self, target: Any, args: Any = (), kwargs: Any = None, callback: Any = None,
                    **_: Any) -> None:
        apply_target(target, args, kwargs, callback, accept_callback=None)

    def terminate_job(self, pid: int, signal: Any = None) -> None:
        """Nothing to kill: a held job runs in no process of its own."""


INLINE_POOL = InlinePool()


class HeldRequest(Request):
    """A job task's request. While held (its remote job waited on in the main process),
    ``revoke(terminate=True)`` revokes it and cancels the remote job instead of signalling
    a process (the main process is no pool child; on threads Celery would raise), and a
    connection loss leaves it held: the redelivered message re-attaches to it."""

    bridge_held = False

    def terminate(self, pool: Any, signal: Any = None) -> None:
        if not self.bridge_held:
            return super().terminate(pool, signal)
        from celery.platforms import signals as _signals

        if not self._already_revoked:
            self._announce_revoked("terminated", True, _signals.signum(signal or "TERM"), False)
        return None

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        if not self.bridge_held:
            return super().cancel(pool, signal, emit_retry)
        return None


class _ConsumerView:
    """The consumer as Celery's default strategy sees it, with two things swapped: the pool
    its request class binds to (:data:`INLINE_POOL`), and where a request goes once
    received (:func:`hold` instead of the pool). ETA messages come back here too; rate
    limits are not applied to job tasks (a held job costs no slot to limit)."""

    disable_rate_limits = True

    def __init__(self, consumer: Any, on_task_request: Any) -> None:
        self._consumer = consumer
        self.pool = INLINE_POOL
        self.on_task_request = on_task_request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)

    def apply_eta_task(self, req: Any) -> None:
        task_reserved(req)
        self.on_task_request(req)
        self._consumer.qos.decrement_eventually()


def can_hold(app: Any, consumer: Any) -> bool:
    """Holding needs kombu's event loop (the hub) and a pool that is not green."""
    if not getattr(app, "_bridge_installed", False):
        return False
    pool = getattr(consumer, "pool", None)
    return getattr(consumer, "hub", None) is not None and not getattr(pool, "is_green", False)


def job_strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
    """``BridgeTask.Strategy``: Celery's default strategy, ending in :func:`hold`."""
    from celery.worker.strategy import default

    from bridge.tasks import JOB_TASKS

    if task.name not in JOB_TASKS:
        return default(task, app, consumer, **kwargs)
    if not can_hold(app, consumer):
        _warn_blocking(app, consumer)
        return default(task, app, consumer, **kwargs)
    from bridge.held import held_jobs

    jobs = held_jobs()

    def on_task_request(req: Any) -> None:
        jobs.receive(req, consumer)

    return default(task, app, _ConsumerView(consumer, on_task_request), **kwargs)


def _warn_blocking(app: Any, consumer: Any) -> None:
    global _warned_blocking
    if _warned_blocking or not getattr(app, "_bridge_installed", False):
        return
    _warned_blocking = True
    pool = type(getattr(consumer, "pool", None)).__module__
    log.warning(
        "bridge: this worker (pool %s, pid %d) has no kombu event loop for bridge to hold job "
        "messages in; bridge job tasks wait in pool slots here (the blocking path). Use the "
        "prefork, threads or solo pool with a Redis or AMQP broker to hold them slot-free.",
        pool, os.getpid(),
    )
