"""The Celery-mode producer: enqueues one ``bridge.batch_item`` task per input, at most
``concurrency`` outstanding, by watching the batch's completion counter in Redis (the workers'
side, the task itself, is :mod:`bridge.batch.celery`).

Task ids are ``bb-{batch}-{nonce}-{index}-{attempt}`` and double as Idempotency-Keys; the nonce
is drawn when the batch's Redis keys are created, so a batch started over (keys gone) never
gets the remote jobs, or the gateway journal entries, of an earlier run back.

The producer reads every result as it lands and feeds the :class:`~bridge.batch.tripwire.Tripwire`:
when the workers' ``/run`` answers show an endpoint-wide mistake (a wrong key, an unknown
endpoint, an unreachable base URL), it enqueues nothing more, cancels the queued items that
have not begun submitting, lets accepted jobs finish, then forgets the items that never had
a remote job (they are pending again, for a re-run) and ends with that error.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery

from bridge import errors, keys
from bridge.batch import store as st
from bridge.batch.handle import BatchHandle, Progress
from bridge.batch.options import Options
from bridge.batch.redis_store import RedisStore
from bridge.batch.tripwire import Tripwire, is_endpoint_wide
from bridge.redis_clients import outage_seconds, riding_sync_client, through_outage

#: How often the producer looks at the completion counter while the batch is full.
WATCH_INTERVAL = 0.05


def _redis_url() -> str:
    from bridge.gateway.settings import default_redis_url

    return default_redis_url()


# kombu's publish retries (Connection.ensure), spanning BRIDGE_REDIS_OUTAGE: 2 s apart at most.
_PUBLISH_RETRY = {"max_retries": int(outage_seconds() / 2) + 5, "interval_start": 0.1, "interval_step": 0.5,
                  "interval_max": 2.0}


def _error_class(item: st.Item) -> type[BaseException] | None:
    kind = item.result.get("type") if isinstance(item.result, dict) else None
    cls = getattr(errors, str(kind), None)
    return cls if isinstance(cls, type) and issubclass(cls, errors.BridgeError) else None


class CeleryBatch(BatchHandle):
    """Enqueues ``bridge.batch_item`` tasks on ``app``, at most ``concurrency`` outstanding."""

    def __init__(self, app: Celery, batch_id: str, endpoint_id: str, inputs: Iterable[Any], options: Options,
                 *, total: int | None = None, redis_url: str | None = None) -> None:
        # Every command rides a Redis restart (BRIDGE_REDIS_OUTAGE): the CLI waits, not dies.
        self.redis = riding_sync_client(redis_url or _redis_url())
        super().__init__(batch_id, RedisStore(self.redis, batch_id))
        self.rstore: RedisStore = self.store  # type: ignore[assignment]
        self.app = app
        self.endpoint_id = endpoint_id
        self.options = options
        self._total = total
        self._cancel = threading.Event()
        self._halt = threading.Event()  # a cancel or the tripwire: enqueue nothing more
        self._enqueue_lock = threading.Lock()  # a cancel never misses an item being enqueued
        self.cancelled_count = 0
        self._skipped = 0
        self._resent = 0  # inputs an earlier run enqueued with no result yet, published again
        self._kept: dict[str, int] = {}
        self._retried: dict[str, int] = {}
        self.tripwire = Tripwire(endpoint_id)
        self._seen = int(self.redis.llen(self.rstore.k_order))  # results from earlier runs: not watched
        self._unaccepted: list[tuple[int, str]] = []  # (index, state) recorded with no remote job
        self.nonce = self.rstore.ensure_nonce(secrets.token_hex(4))
        self._thread = threading.Thread(target=self._main, args=(inputs,), name=f"bridge-batch-{batch_id}",
                                        daemon=True)
        self._thread.start()

    @property
    def total(self) -> int | None:
        return self._total

    def task_id(self, index: int, attempt: int) -> str:
        """The item's Celery task id, which is also its Idempotency-Key."""
        if self.nonce:
            return f"bb-{self.batch_id}-{self.nonce}-{index}-{attempt}"
        return f"bb-{self.batch_id}-{index}-{attempt}"  # a batch begun before nonces existed

    def resumed_counts(self) -> dict[str, dict[str, int]]:
        return {"kept": dict(self._kept), "retried": dict(self._retried)}

    def _main(self, inputs: Iterable[Any]) -> None:
        error: BaseException | None = None
        try:
            self._produce(inputs)
            self._drain()
            error = self._settle_stop()
        except BaseException as exc:  # handed to the caller by wait()
            error = exc
        self._set_finished(error)

    def _attempt(self, index: int, item: st.Item | None, forgotten: bool) -> int | None:
        """The attempt to enqueue ``index`` with, or None to leave it (kept, or in flight)."""
        store = self.rstore
        if item is None:
            if store.was_enqueued(index):
                return None  # enqueued by an earlier run and not recorded: see _resend
            return store.next_attempt(index) if forgotten else 0
        outcome = item.outcome
        if outcome == "completed" or (outcome == "failed" and not self.options.retry_failed):
            self._kept[outcome] = self._kept.get(outcome, 0) + 1
            self._skipped += 1
            return None
        if not store.reopen(index, item.state):
            self._skipped += 1
            return None
        self._retried[outcome] = self._retried.get(outcome, 0) + 1
        # A batch-cancelled item already holds its next attempt; the others get a fresh task id.
        return item.attempt if item.state == st.CANCELLED else item.attempt + 1

    def _produce(self, inputs: Iterable[Any]) -> None:
        store = self.rstore
        store.set_meta("endpoint_id", self.endpoint_id)
        if self._total is not None:
            store.set_meta("total", str(self._total))
        forgotten = store.has_forgotten()
        index, seen = -1, 0
        for index, value in enumerate(inputs):
            if self._halt.is_set():
                break
            seen = index + 1
            item = store.get(index)
            if item is None and self._resend(index, value):
                continue
            attempt = self._attempt(index, item, forgotten)
            if attempt is None:
                continue
            self._wait_for_room()
            with self._enqueue_lock:
                if self._halt.is_set():
                    if store.get(index) is None:
                        store.remember_attempt(index, attempt)  # reopened just now: keep its attempt
                    break
                store.mark_enqueued(index, attempt)
                self._publish(index, value, attempt)
            self._notify()
        else:
            seen = index + 1
        if self._total is None or seen > self._total:
            self._total = seen  # cancelled before reading them all: what was read
            store.set_meta("total", str(self._total))

    def _resend(self, index: int, value: Any) -> bool:
        """An input an earlier run enqueued that has no result yet: publish its task again,
        same task id. Its first message may still be queued or held (a second delivery of
        the same id re-attaches or resumes the same remote job: nothing is submitted twice),
        or gone without a record (its worker failed to record, or the broker lost it): then
        only this one makes the re-run finish instead of waiting for it forever."""
        attempt = self.rstore.enqueued_attempt(index)
        if attempt is None or self._halt.is_set():
            return False
        self._publish(index, value, attempt)
        self._resent += 1
        return True

    def _publish(self, index: int, value: Any, attempt: int) -> None:
        kwargs: dict[str, Any] = {"attempt": attempt, "policy": self.options.policy, "base_url": self.options.base_url}
        if self.options.timeout is not None:  # only when set: workers of earlier versions take the rest
            kwargs["timeout"] = self.options.timeout
        if self.options.stream:
            kwargs["stream"] = True
        self.app.send_task(
            "bridge.batch_item", args=[value, self.endpoint_id, self.batch_id, index],
            kwargs=kwargs,
            task_id=self.task_id(index, attempt), ignore_result=True,
            retry=True, retry_policy=_PUBLISH_RETRY,  # the broker restarting: publish once it is back
        )

    def _outstanding(self) -> int:
        return self.rstore.enqueued_total() - self.rstore.finished_total()

    def _wait_for_room(self) -> None:
        while not self._halt.is_set():
            self._watch()
            if self._outstanding() < self.options.concurrency or self._halt.is_set():
                return
            self._halt.wait(WATCH_INTERVAL)  # a counter watch, bounded by the batch's progress

    def _drain(self) -> None:
        """Wait until every enqueued input has a result (a cancelled batch too: its items
        record CANCELLED once their workers have cancelled the remote jobs)."""
        while self._outstanding() > 0:
            self._watch()
            time.sleep(WATCH_INTERVAL)  # watching the completion counter
            self._notify()
        self._watch()

    def _watch(self) -> None:
        """Feed the results recorded since the last look to the tripwire."""
        new_seen, items = self.rstore.completed_since(self._seen)
        self._seen = new_seen
        for item in items:
            if item.job_id or item.state == st.DONE:
                self.tripwire.accepted_job()
                continue
            cls = _error_class(item) if item.state == st.FAILED else None
            if item.state == st.CANCELLED or is_endpoint_wide(cls):
                self._unaccepted.append((item.index, item.state))
            if cls is not None and is_endpoint_wide(cls) and not self.tripwire.tripped:
                message = str(item.result.get("message", ""))
                if self.tripwire.note(cls, message.split(". Check: ")[0]):
                    self._stop()

    def _stop(self) -> None:
        """Endpoint-wide stop: enqueue nothing more and keep queued items from submitting
        (accepted jobs run on and are recorded)."""
        with self._enqueue_lock:
            self._halt.set()
        for index, attempt in list(self.rstore.unfinished_enqueued()):
            self.rstore.cancel_unclaimed(self.task_id(index, attempt))

    def _settle_stop(self) -> errors.BridgeError | None:
        """After the drain of a stopped batch: forget what never reached the endpoint, so
        nothing is recorded against an input because of the endpoint-wide mistake."""
        if self.tripwire.error is None:
            return None
        for index, state in self._unaccepted:
            self.rstore.forget_unaccepted(index, state)
        self._notify()
        return self.tripwire.error

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
            self._halt.set()
        ids = [self.task_id(i, attempt) for i, attempt in self.rstore.unfinished_enqueued()]
        def set_keys() -> None:
            pipe = self.redis.pipeline()
            for task_id in ids:
                pipe.set(keys.cancel(task_id), "1", ex=86400)
            pipe.execute()

        through_outage(set_keys, _redis_url())
        if wait and not self._finished.wait(timeout):
            raise errors.Timeout(f"batch {self.batch_id} did not finish cancelling in {timeout} s", None,
                                 self.endpoint_id, None, timeout)

    def close(self) -> None:
        self.redis.close()


__all__ = ["CeleryBatch"]
