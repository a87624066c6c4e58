"""Batches through Celery workers: one ``bridge.batch_item`` task per input, results per job
in Redis (:class:`~bridge.batch.redis_store.RedisStore`), a producer that keeps at most
``concurrency`` tasks outstanding by watching the completion counter.

Workers need this module imported (``bridge.install(app)`` plus ``imports =
("bridge.batch.celery",)``, or ``celery -A bridge.app``). Each item runs through the gateway
(``Gateway.run``), so it gets the gateway's journal, shared per-endpoint rate budget, the one job lifecycle,
hooks and cancel keys; its task id ``bb-{batch}-{nonce}-{index}-{attempt}`` is the Idempotency-Key,
so a redelivered or re-enqueued item never creates a second remote job.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, Task, shared_task
from celery.exceptions import Reject

from bridge import errors
from bridge.batch import store as st
from bridge.batch.engine import error_dict
from bridge.batch.redis_store import RedisStore
from bridge.redis_clients import riding_sync_client
from bridge.tasks import HELD_PLANS, BridgeTask, deliver, run_outcome

log = logging.getLogger("bridge.batch")

def default_app(broker: str | None = None) -> Celery:
    """A producer app for the CLI's ``--celery``: ``--broker``, else CELERY_BROKER_URL."""
    import os

    url = broker or os.environ.get("CELERY_BROKER_URL")
    if not url:
        raise errors.ConfigurationError(
            "--celery needs a broker", None, None, "--broker URL or CELERY_BROKER_URL (and running workers)"
        )
    app = Celery("bridge-batch", broker=url, backend=os.environ.get("CELERY_RESULT_BACKEND", url))
    app.conf.update(task_serializer="json", accept_content=["json"])
    return app


def _redis_url() -> str:
    from bridge.gateway.settings import default_redis_url

    return default_redis_url()


_stores: dict[str, RedisStore] = {}
_stores_lock = threading.Lock()


def _store(batch_id: str) -> RedisStore:
    with _stores_lock:
        found = _stores.get(batch_id)
        if found is None:
            client = riding_sync_client(_redis_url())  # records ride a Redis restart
            found = _stores[batch_id] = RedisStore(client, batch_id)
            if len(_stores) > 64:  # old batches: drop the oldest handle
                _stores.pop(next(iter(_stores))).close()
        return found


def _known(store: Any, index: int, attempt: int) -> str | None:
    """The state an earlier delivery already recorded for this item (a redelivery after
    the result was stored), else None."""
    known = store.get(index)
    if known is not None and known.attempt >= attempt and known.state != st.CANCELLED:
        return str(known.state)
    return None


async def await_item(gateway: Any, spec: Any, stream: bool = False) -> dict[str, Any]:
    """Wait on one item's job on the gateway loop: what to record, as a dict (``state``,
    ``job_id``, ``output`` or ``error``). Raises ``HandedOff`` on a warm shutdown."""
    from bridge.gateway.core import Cancelled

    try:
        output = await gateway.arun(spec, stream=stream)
    except Cancelled as exc:
        job_id = exc.job_id or (await gateway.journal.get(spec.task_id)).get("job_id")
        return {"state": st.CANCELLED, "job_id": job_id}
    except errors.BridgeError as exc:
        job_id = exc.job_id or (await gateway.journal.get(spec.task_id)).get("job_id")
        return {"state": st.FAILED, "job_id": job_id, "error": error_dict(exc)}
    job_id = (await gateway.journal.get(spec.task_id)).get("job_id")
    return {"state": st.DONE, "job_id": job_id, "output": output}


def record_item(store: Any, index: int, attempt: int, record: dict[str, Any]) -> str:
    """Write what :func:`await_item` returned into the batch's store; returns the state."""
    state = record["state"]
    if state == st.CANCELLED:
        store.cancelled(index, attempt + 1, record.get("job_id"))
    elif state == st.FAILED:
        store.finished(index, st.FAILED, attempt, record.get("job_id"), record["error"])
    else:
        store.finished(index, st.DONE, attempt, record.get("job_id"), record.get("output"))
    return str(state)


def _item_spec(task_id: str, input: Any, endpoint_id: str, attempt: int, policy: dict[str, Any] | None,
               base_url: str | None, timeout: float | None = None) -> Any:
    from bridge.gateway.core import JobSpec

    return JobSpec(task_id=task_id, endpoint_id=endpoint_id, input=input, policy=policy, base_url=base_url,
                   attempt=attempt, timeout=timeout)


def run_item(
    task_id: str, input: Any, endpoint_id: str, batch_id: str, index: int, attempt: int = 0,
    policy: dict[str, Any] | None = None, base_url: str | None = None, *, store: Any = None,
    timeout: float | None = None, stream: bool = False,
) -> str:
    """Run one input through the gateway and record its outcome; returns the state recorded.

    Plain function, blocking its caller while the job runs (the task's blocking path).
    Raises ``HandedOff`` when the worker is shutting down (the remote job keeps running
    and the redelivery resumes it)."""
    from bridge.gateway.core import get_gateway

    store = store or _store(batch_id)
    known = _known(store, index, attempt)
    if known is not None:
        return known
    gateway = get_gateway()
    spec = _item_spec(task_id, input, endpoint_id, attempt, policy, base_url, timeout)
    return record_item(store, index, attempt, gateway.call(await_item(gateway, spec, stream)))


def plan_item(req: Any, a: dict[str, Any]) -> Any:
    """The start of a held ``bridge.batch_item`` whose arguments by name are ``a`` (see
    :func:`bridge.tasks.plan_held`)."""
    from bridge.gateway.core import get_gateway
    from bridge.held import Outcome

    attempt = a.get("attempt", 0)
    known = _known(_store(a["batch_id"]), a["index"], attempt)
    if known is not None:
        return Outcome("result", known)
    gateway = get_gateway()
    spec = _item_spec(req.id, a["input"], a["endpoint_id"], attempt, a.get("policy"), a.get("base_url"),
                      a.get("timeout"))
    return run_outcome(await_item(gateway, spec, bool(a.get("stream"))))


@shared_task(bind=True, base=BridgeTask, name="bridge.batch_item", ignore_result=True)
def batch_item(self: Task, input: Any, endpoint_id: str, batch_id: str, index: int, *, attempt: int = 0,
               policy: dict[str, Any] | None = None, base_url: str | None = None,
               timeout: float | None = None, stream: bool = False) -> str:
    """One batch input (results go to the batch's Redis hash, not the result backend)."""
    from bridge.gateway.core import HandedOff
    from bridge.held import outcome_for

    outcome = outcome_for(self.request.id)
    if outcome is not None:  # held: the wait is over, record what it found
        if outcome.kind == "result" and isinstance(outcome.value, dict):
            return record_item(_store(batch_id), index, attempt, outcome.value)
        return deliver(self, outcome)
    try:
        return run_item(self.request.id, input, endpoint_id, batch_id, index, attempt, policy, base_url,
                        timeout=timeout, stream=stream)
    except HandedOff:
        raise Reject("worker shutting down; the remote job keeps running", requeue=True) from None


HELD_PLANS["bridge.batch_item"] = plan_item


# The producer side lives in bridge.batch.producer (tripwire, nonce'd task ids, re-run rules);
# re-exported here, where callers have always imported it from.
from bridge.batch.producer import CeleryBatch  # noqa: E402, F401
