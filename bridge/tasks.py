"""The Celery tasks ``bridge.run``, ``bridge.run_sync``, ``bridge.stream``, ``bridge.status``,
``bridge.cancel``, ``bridge.purge_queue`` and ``bridge.health``: thin shells over
:mod:`bridge.gateway`. They are shared tasks, so any app that imports this module (see
:func:`bridge.install`) has them; the input comes first so a chain passes it along.

What the shell adds to the gateway is Celery's side of the contract: the REVOKED checks
before anything is submitted (the result backend, the worker's revoked set, the cancel key),
a STARTED marker so other workers leave the state alone, the deadline from ``expires`` and
time limits, REVOKED (never a later SUCCESS) when the remote job was cancelled, and a
requeue instead of a remote cancel when the worker is shutting down.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task, states
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded

from bridge import errors
from bridge.gateway.core import Cancelled, HandedOff, JobSpec, get_gateway
from bridge.held import outcome_for
from bridge.redis_clients import through_outage
from bridge.task_state import abegin, begin, redis_begin_args

log = logging.getLogger("bridge.tasks")

#: The task names this module defines (the worker step watches these).
TASK_NAMES = frozenset({
    "bridge.run", "bridge.run_sync", "bridge.stream", "bridge.status", "bridge.cancel",
    "bridge.purge_queue", "bridge.health",
})
#: Tasks that own a remote job (journal, cancel key, redelivery resume); the worker step
#: mirrors their revokes and keeps their held messages from the visibility timeout.
#: ``bridge.batch_item`` (bridge.batch.celery) waits on a remote job the same way.
JOB_TASKS = frozenset({"bridge.run", "bridge.run_sync", "bridge.stream", "bridge.batch_item"})


class BridgeTask(Task):
    """Options that make redelivery safe whatever the app's defaults are."""

    abstract = True
    acks_late = True  # a killed worker's task is redelivered, and resumes its job
    reject_on_worker_lost = True  # a killed prefork child requeues instead of acking
    track_started = False  # STARTED is written by the task itself, after the REVOKED check
    max_retries = None
    # Job tasks' messages are held in the worker's main process while their remote job
    # runs (bridge.strategy, bridge.held); other bridge tasks get Celery's default strategy.
    Strategy = "bridge.strategy:job_strategy"
    Request = "bridge.strategy:HeldRequest"

    def apply_async(self, args: Any = None, kwargs: Any = None, *a: Any, **kw: Any) -> Any:
        first = args[0] if args else None
        if self.name in JOB_TASKS and isinstance(first, dict) and "s3Config" in first:
            raise errors.InvalidRequest(
                "s3Config must not travel in task arguments (they are stored and logged)",
                None, None, "set BRIDGE_S3_CONFIG in the worker's environment instead",
            )
        return super().apply_async(args, kwargs, *a, **kw)


def _expires_at(value: Any) -> float | None:
    """Celery's ``expires`` (a datetime, ISO text or epoch seconds) as epoch seconds."""
    if not value:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    return float(value)


def _deadline(task: Task, timelimit: Any, timeout: float | None) -> float | None:
    """bridge's own timeout, tightened by the task's time limits (which the threads pool
    never enforces, held jobs are not subject to, and prefork enforces by killing the child
    without a remote cancel)."""
    hard, soft = timelimit or (None, None)
    hard = hard or task.time_limit or task.app.conf.task_time_limit
    soft = soft or task.soft_time_limit or task.app.conf.task_soft_time_limit
    limits = [x for x in (timeout, soft, (hard - 1.0) if hard else None) if x]
    return min(limits) if limits else None


def _mark_revoked(task: Task, reason: str) -> None:
    task.backend.mark_as_revoked(task.request.id, reason, request=task.request)
    raise Ignore()


#: Job tasks whose held start is not :func:`plan_held`'s (``bridge.batch_item``): called
#: with the request and its arguments by name.
HELD_PLANS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {}

#: How each job task drives the gateway: keyword arguments of ``Gateway.arun``.
_MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "bridge.run": lambda a: {},
    "bridge.stream": lambda a: {"stream": True},
    "bridge.run_sync": lambda a: {"runsync_wait": min(a.get("timeout") or 90.0, 300.0)},
}


def _reason(meta: dict[str, Any], task_id: str, expires_at: float | None) -> str | None:
    """What the start check's backend meta says: ``"done"`` when an earlier delivery
    already stored SUCCESS, a revoke reason when this delivery must not start (REVOKED in
    the backend: a broadcast this worker missed; this process's revoked set; ``expires``
    passed), else None (the check marked it STARTED, so other workers leave it alone)."""
    from celery.worker import state as worker_state

    if meta.get("status") == states.SUCCESS:
        return "done"
    if task_id in worker_state.revoked or meta.get("status") == states.REVOKED:
        return "revoked"
    if expires_at is not None and expires_at <= time.time():
        return "expired"
    return None


def _start_check(task: Task, request: Any, task_id: str, expires: Any) -> tuple[str | None, dict[str, Any]]:
    """The start checks of a job delivery, in one round trip (see :func:`_reason`); through
    a Redis restart it waits (``BRIDGE_REDIS_OUTAGE``) instead of failing the task."""
    meta = through_outage(lambda: begin(task.backend, request, task_id), str(getattr(task.backend, "url", "")))
    return _reason(meta, task_id, _expires_at(expires)), meta


def _spec(task: Task, task_id: str, a: dict[str, Any], timelimit: Any, expires: Any,
          retries: int) -> JobSpec:
    return JobSpec(
        task_id=task_id, endpoint_id=a["endpoint_id"], input=a["input"], policy=a.get("policy"),
        webhook=a.get("webhook"), timeout=_deadline(task, timelimit, a.get("timeout")),
        expires_at=_expires_at(expires), attempt=retries or 0,
    )


_signatures: dict[str, inspect.Signature] = {}


def bind_arguments(task: Task, args: Any, kwargs: Any) -> dict[str, Any]:
    """A job task's arguments by name, as its body would receive them (TypeError if they
    do not fit)."""
    sig = _signatures.get(task.name)
    if sig is None:
        sig = _signatures[task.name] = inspect.signature(task.run)
    return dict(sig.bind(*args, **kwargs).arguments)


def plan_held(req: Any) -> Any:
    """The start of a held job task (see :mod:`bridge.held`), on the held-jobs thread: an
    :class:`~bridge.held.Outcome` when the delivery must not wait (bad arguments), else the
    coroutine that runs the start checks and waits on its remote job on the gateway loop,
    resolving to the outcome."""
    from bridge.held import Outcome

    task = req.task
    try:
        a = bind_arguments(task, req.args, req.kwargs)
    except TypeError:
        return Outcome("plain")  # the tracer calls the body and fails it with the TypeError
    custom = HELD_PLANS.get(task.name)
    if custom is not None:
        return custom(req, a)
    gateway = get_gateway()
    begin_args = redis_begin_args(task.backend, req._context, req.id, gateway.settings.redis_url)
    early = None
    if begin_args is None:  # another backend: the sync start check, here
        early, _ = _start_check(task, req._context, req.id, req.expires)
    spec = _spec(task, req.id, a, req.time_limits, req.expires, req.request_dict.get("retries", 0))
    return _held(gateway, task, spec, _MODES[task.name](a), begin_args, early)


async def _held(gateway: Any, task: Task, spec: JobSpec, mode: dict[str, Any],
                begin_args: Any, reason: str | None) -> Any:
    """A held job on the gateway loop: the start checks, then the wait; its outcome."""
    from bridge import keys
    from bridge.held import Outcome

    if begin_args is not None:
        meta = await abegin(gateway.redis, gateway.journal.batch, task.backend, begin_args)
        reason = _reason(meta, spec.task_id, spec.expires_at)
    if reason == "done":
        return Outcome("done")
    if reason is not None:  # a redelivery or a sibling delivery must not submit either
        await gateway.redis.set(keys.cancel(spec.task_id), "1", ex=gateway.settings.journal_ttl)
        return Outcome("cancelled", reason)
    return await run_outcome(gateway.arun(spec, **mode))


async def run_outcome(wait: Any) -> Any:
    """Await a gateway wait and express how it ended as an :class:`~bridge.held.Outcome`."""
    from bridge.held import Outcome

    try:
        return Outcome("result", await wait)
    except Cancelled as exc:
        return Outcome("cancelled", exc.reason)
    except HandedOff:
        return Outcome("handoff")
    except errors.BridgeError as exc:
        return Outcome("error", exc)


def _job(task: Task, input: Any, endpoint_id: str, policy: dict[str, Any] | None,
         webhook: str | None, timeout: float | None) -> Any:
    request = task.request
    outcome = outcome_for(request.id)
    if outcome is not None:  # a held job completing: its outcome is ready
        return deliver(task, outcome)
    # The blocking path: this delivery waits on its remote job here, in its pool slot.
    reason, meta = _start_check(task, request, request.id, getattr(request, "expires", None))
    if reason == "done":
        return meta.get("result")  # a late second delivery: same result, nothing sent
    gateway = get_gateway()
    if reason is not None:
        from bridge.gateway import cancel_task

        cancel_task(request.id)  # a redelivery or a sibling delivery must not submit either
        _mark_revoked(task, reason)
    a = {"input": input, "endpoint_id": endpoint_id, "policy": policy, "webhook": webhook, "timeout": timeout}
    spec = _spec(task, request.id, a, getattr(request, "timelimit", None), getattr(request, "expires", None),
                 request.retries or 0)
    try:
        return gateway.call(gateway.arun(spec, **_MODES[task.name](a)))
    except Cancelled as exc:
        _mark_revoked(task, exc.reason)
    except HandedOff:
        log.info("bridge: %s[%s] handed to the next worker (shutting down)", task.name, request.id)
        raise Reject("worker shutting down; the remote job keeps running", requeue=True) from None
    except SoftTimeLimitExceeded:
        gateway.cancel_job_of(request.id)
        entry = gateway.journal_entry(request.id)
        raise errors.Timeout(
            "the task's soft time limit passed; the remote job was cancelled",
            entry.get("job_id"), endpoint_id, None, task.soft_time_limit,
        ) from None


def deliver(task: Task, outcome: Any) -> Any:
    """Return or raise a held job's outcome from its task body (inside Celery's tracer)."""
    if outcome.kind == "result":
        return outcome.value
    if outcome.kind == "error":
        raise outcome.value
    if outcome.kind == "cancelled":
        _mark_revoked(task, outcome.value)
    raise RuntimeError(f"bridge: unexpected held outcome {outcome.kind!r} for {task.request.id}")


@shared_task(bind=True, base=BridgeTask, name="bridge.run")
def run(self: Task, input: Any, endpoint_id: str, *, policy: dict[str, Any] | None = None,
        webhook: str | None = None, timeout: float | None = None) -> Any:
    """Submit ``input`` to ``endpoint_id``, wait, return the output (see docs/celery.md)."""
    return _job(self, input, endpoint_id, policy, webhook, timeout)


@shared_task(bind=True, base=BridgeTask, name="bridge.run_sync")
def run_sync(self: Task, input: Any, endpoint_id: str, *, timeout: float | None = None) -> Any:
    """Like ``bridge.run`` through ``/runsync`` (short jobs; one request when it finishes in time)."""
    return _job(self, input, endpoint_id, None, None, timeout)


@shared_task(bind=True, base=BridgeTask, name="bridge.stream")
def stream(self: Task, input: Any, endpoint_id: str, *, policy: dict[str, Any] | None = None,
           timeout: float | None = None) -> list[Any]:
    """Run a streaming job; chunks go to the Redis Stream ``bridge:stream:{task_id}`` as they
    arrive; the result is the list of all chunks."""
    return _job(self, input, endpoint_id, policy, None, timeout)


@shared_task(bind=True, base=BridgeTask, name="bridge.status")
def status(self: Task, job_id: str, endpoint_id: str) -> dict[str, Any]:
    """One status look, no waiting: the endpoint's status body."""
    return get_gateway().status(job_id, endpoint_id)


@shared_task(bind=True, base=BridgeTask, name="bridge.cancel")
def cancel(self: Task, job_id: str, endpoint_id: str) -> dict[str, Any]:
    """POST /cancel for a remote job id (to cancel by Celery task id use bridge.cancel_task)."""
    return get_gateway().cancel(job_id, endpoint_id)


@shared_task(bind=True, base=BridgeTask, name="bridge.purge_queue")
def purge_queue(self: Task, endpoint_id: str) -> dict[str, Any]:
    """Remove every IN_QUEUE job of the endpoint; running jobs go on."""
    return get_gateway().purge_queue(endpoint_id)


def job_meta(task_id: str, redis_url: str | None = None) -> dict[str, Any]:
    """What plugins said about task ``task_id``'s job (its ``ctx.meta``, redacted), e.g.
    ``{"cache": "hit"}``; ``{}`` when nothing was said. Read from the journal in Redis
    (``BRIDGE_REDIS_URL`` unless ``redis_url``); works for any bridge job task, from any process."""
    import json

    from bridge import keys
    from bridge.gateway.settings import default_redis_url
    from bridge.redis_clients import riding_sync_client

    client = riding_sync_client(redis_url or default_redis_url())  # through a Redis restart
    try:
        raw = client.hget(keys.journal(task_id), "meta")
    finally:
        client.close()
    return json.loads(raw) if raw else {}


@shared_task(bind=True, base=BridgeTask, name="bridge.health")
def health(self: Task, endpoint_id: str) -> dict[str, Any]:
    """The endpoint's /health body (jobs and workers counts)."""
    return get_gateway().health(endpoint_id)
