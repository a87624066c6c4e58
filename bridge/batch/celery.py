"""Batches through Celery workers: one ``bridge.batch_item`` task per input, results per job
in Redis (:class:`~bridge.batch.redis_store.RedisStore`), a producer that keeps at most
``concurrency`` tasks outstanding by watching the completion counter.

Workers need this module imported (``bridge.install(app)`` plus ``imports =
("bridge.batch.celery",)``, or ``celery -A bridge.app``). Each item runs through the gateway
(``Gateway.run``), so it gets the gateway's journal, shared per-endpoint rate budget, poller,
hooks and cancel keys; its task id ``bb-{batch}-{nonce}-{index}-{attempt}`` is the Idempotency-Key,
so a redelivered or re-enqueued item never creates a second remote job.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import Celery, Task, shared_task
from celery.exceptions import Reject

from bridge import errors
from bridge.batch import store as st
from bridge.batch.engine import error_dict
from bridge.batch.redis_store import RedisStore
from bridge.tasks import BridgeTask

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
            client = redis.Redis.from_url(_redis_url())
            found = _stores[batch_id] = RedisStore(client, batch_id)
            if len(_stores) > 64:  # old batches: drop the oldest handle
                _stores.pop(next(iter(_stores))).close()
        return found


def run_item(
    task_id: str, input: Any, endpoint_id: str, batch_id: str, index: int, attempt: int = 0,
    policy: dict[str, Any] | None = None, base_url: str | None = None, *, store: Any = None,
) -> str:
    """Run one input through the gateway and record its outcome; returns the state recorded.

    Plain function (the task is a shell over it). Raises ``HandedOff`` when the worker is
    shutting down (the remote job keeps running and the redelivery resumes it)."""
    from bridge.gateway.core import Cancelled, JobSpec, get_gateway

    store = store or _store(batch_id)
    known = store.get(index)
    if known is not None and known.attempt >= attempt and known.state != st.CANCELLED:
        return str(known.state)  # a redelivery after the result was stored
    gateway = get_gateway()
    spec = JobSpec(task_id=task_id, endpoint_id=endpoint_id, input=input, policy=policy, base_url=base_url,
                   attempt=attempt)
    try:
        output = gateway.run(spec)
    except Cancelled as exc:
        store.cancelled(index, attempt + 1, exc.job_id or gateway.journal_entry(task_id).get("job_id"))
        return st.CANCELLED
    except errors.BridgeError as exc:
        job_id = exc.job_id or gateway.journal_entry(task_id).get("job_id")
        store.finished(index, st.FAILED, attempt, job_id, error_dict(exc))
        return st.FAILED
    store.finished(index, st.DONE, attempt, gateway.journal_entry(task_id).get("job_id"), output)
    return st.DONE


@shared_task(bind=True, base=BridgeTask, name="bridge.batch_item", ignore_result=True)
def batch_item(self: Task, input: Any, endpoint_id: str, batch_id: str, index: int, *, attempt: int = 0,
               policy: dict[str, Any] | None = None, base_url: str | None = None) -> str:
    """One batch input (results go to the batch's Redis hash, not the result backend)."""
    from bridge.gateway.core import HandedOff

    try:
        return run_item(self.request.id, input, endpoint_id, batch_id, index, attempt, policy, base_url)
    except HandedOff:
        raise Reject("worker shutting down; the remote job keeps running", requeue=True) from None


# The producer side lives in bridge.batch.producer (tripwire, nonce'd task ids, re-run rules);
# re-exported here, where callers have always imported it from.
from bridge.batch.producer import CeleryBatch  # noqa: E402, F401
