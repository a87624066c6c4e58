"""Batches through Celery workers: one ``bridge.batch_item`` task per input, results per job
in Redis (:class:`~bridge.batch.redis_store.RedisStore`), a producer that keeps at most
``concurrency`` tasks outstanding by watching the completion counter.

Workers need this module imported (``bridge.install(app)`` plus ``imports =
("bridge.batch.celery",)``, or ``celery -A bridge.app``). Each item runs through the gateway
(``Gateway.run``), so it gets the gateway's journal, shared per-endpoint rate budget, poller,
hooks and cancel keys; its task id ``bb-{batch}-{index}-{attempt}`` is the Idempotency-Key,
so a redelivered or re-enqueued item never creates a second remote job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery, Task, shared_task
from celery.exceptions import Reject

from bridge import errors, keys
from bridge.batch import store as st
from bridge.batch.engine import Options, error_dict
from bridge.batch.handle import BatchHandle, Progress
from bridge.batch.redis_store import RedisStore
from bridge.tasks import BridgeTask

log = logging.getLogger("bridge.batch")

#: How often the producer looks at the completion counter while the batch is full.
WATCH_INTERVAL = 0.05


def item_task_id(batch_id: str, index: int, attempt: int) -> str:
    return f"bb-{batch_id}-{index}-{attempt}"


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


class CeleryBatch(BatchHandle):
    """Enqueues ``bridge.batch_item`` tasks on ``app``, at most ``concurrency`` outstanding."""

    def __init__(self, app: Celery, batch_id: str, endpoint_id: str, inputs: Iterable[Any], options: Options,
                 *, total: int | None = None, redis_url: str | None = None) -> None:
        self.redis = redis.Redis.from_url(redis_url or _redis_url())
        super().__init__(batch_id, RedisStore(self.redis, batch_id))
        self.rstore: RedisStore = self.store  # type: ignore[assignment]
        self.app = app
        self.endpoint_id = endpoint_id
        self.options = options
        self._total = total
        self._cancel = threading.Event()
        self._enqueue_lock = threading.Lock()  # a cancel never misses an item being enqueued
        self.cancelled_count = 0
        self._skipped = 0
        self._thread = threading.Thread(target=self._main, args=(inputs,), name=f"bridge-batch-{batch_id}",
                                        daemon=True)
        self._thread.start()

    @property
    def total(self) -> int | None:
        return self._total

    def _main(self, inputs: Iterable[Any]) -> None:
        error: BaseException | None = None
        try:
            self._produce(inputs)
            self._drain()
        except BaseException as exc:  # handed to the caller by wait()
            error = exc
        self._set_finished(error)

    def _produce(self, inputs: Iterable[Any]) -> None:
        store = self.rstore
        store.set_meta("endpoint_id", self.endpoint_id)
        if self._total is not None:
            store.set_meta("total", str(self._total))
        index, seen = -1, 0
        for index, value in enumerate(inputs):
            if self._cancel.is_set():
                break
            seen = index + 1
            item = store.get(index)
            attempt = 0
            if item is not None:
                if item.state != st.CANCELLED or not store.reopen(index):
                    self._skipped += 1
                    continue
                attempt = item.attempt  # cancelled earlier: a fresh task id and key
            elif store.was_enqueued(index):
                continue  # in flight from an earlier run: its task is still queued or running
            self._wait_for_room()
            with self._enqueue_lock:
                if self._cancel.is_set():
                    break
                store.mark_enqueued(index, attempt)
                self.app.send_task(
                    "bridge.batch_item", args=[value, self.endpoint_id, self.batch_id, index],
                    kwargs={"attempt": attempt, "policy": self.options.policy, "base_url": self.options.base_url},
                    task_id=item_task_id(self.batch_id, index, attempt), ignore_result=True,
                )
            self._notify()
        else:
            seen = index + 1
        if self._total is None or seen > self._total:
            self._total = seen  # cancelled before reading them all: what was read
            store.set_meta("total", str(self._total))

    def _outstanding(self) -> int:
        return self.rstore.enqueued_total() - self.rstore.finished_total()

    def _wait_for_room(self) -> None:
        while self._outstanding() >= self.options.concurrency and not self._cancel.is_set():
            self._cancel.wait(WATCH_INTERVAL)  # a counter watch, bounded by the batch's progress

    def _drain(self) -> None:
        """Wait until every enqueued input has a result (a cancelled batch too: its items
        record CANCELLED once their workers have cancelled the remote jobs)."""
        while self._outstanding() > 0:
            time.sleep(WATCH_INTERVAL)  # watching the completion counter
            self._notify()

    def progress(self) -> Progress:
        counts = self.rstore.counts()
        done, failed = counts.get(st.DONE, 0), counts.get(st.FAILED, 0)
        return Progress(
            total=self._total, done=done, failed=failed, in_flight=max(0, self._outstanding()),
            cancelled=counts.get(st.CANCELLED, 0), elapsed=time.monotonic() - self.started,
            rate=self._rate(done + failed - self._skipped),
        )

    def cancel(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop enqueuing and cancel every outstanding item: a queued task will not submit,
        a waiting one cancels its remote job (the gateway's cancel keys)."""
        with self._enqueue_lock:
            self._cancel.set()
        ids = [item_task_id(self.batch_id, i, attempt) for i, attempt in self.rstore.unfinished_enqueued()]
        pipe = self.redis.pipeline()
        for task_id in ids:
            pipe.set(keys.cancel(task_id), "1", ex=86400)
        pipe.execute()
        if wait and not self._finished.wait(timeout):
            raise errors.Timeout(f"batch {self.batch_id} did not finish cancelling in {timeout} s", None,
                                 self.endpoint_id, None, timeout)

    def close(self) -> None:
        self.redis.close()
