"""What ``bridge.batch(...)`` returns: progress counts, results as they complete, ordered
results, failures, and ``cancel()`` of the whole batch.

Every read goes to the batch's store (SQLite journal or Redis), never to an in-memory list, so
a 100,000-input batch costs the same memory as a 100-input one until you ask for a list.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bridge import errors
from bridge.batch import store as st

_ERROR_STATUS = {"JobCancelled": "CANCELLED", "JobTimedOut": "TIMED_OUT"}


@dataclass(frozen=True)
class Result:
    """One input's outcome. ``status``: COMPLETED, FAILED, CANCELLED, TIMED_OUT, or PENDING
    (never submitted, or cancelled with the batch before it finished)."""

    index: int
    job_id: str | None
    status: str
    output: Any = None
    error: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED"

    def to_json(self) -> dict[str, Any]:
        """The CLI's output line: ``{"index", "id", "status", "output" | "error"}``."""
        body: dict[str, Any] = {"index": self.index, "id": self.job_id, "status": self.status}
        if self.ok:
            body["output"] = self.output
        else:
            body["error"] = self.error
        return body

    @classmethod
    def from_item(cls, item: st.Item | None, index: int) -> Result:
        if item is None:
            return cls(index, None, "PENDING", error={"type": "Pending", "message": "not submitted"})
        if item.state == st.DONE:
            return cls(item.index, item.job_id, "COMPLETED", output=item.result)
        if item.state == st.FAILED:
            kind = item.result.get("type") if isinstance(item.result, dict) else None
            return cls(item.index, item.job_id, _ERROR_STATUS.get(str(kind), "FAILED"), error=item.result)
        if item.state == st.CANCELLED:
            return cls(
                item.index, item.job_id, "CANCELLED",
                error={"type": "BatchCancelled", "message": "cancelled with the batch; re-run to resubmit"},
            )
        return cls(
            item.index, item.job_id, "PENDING",
            error={"type": "InFlight", "message": "submitted, not finished when the batch stopped"},
        )


@dataclass(frozen=True)
class Progress:
    total: int | None
    done: int
    failed: int
    in_flight: int
    cancelled: int
    elapsed: float
    rate: float
    throttled: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def eta(self) -> float | None:
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.finished) / self.rate)


class BatchHandle:
    """Base for the in-process and Celery handles; subclasses run the batch and fill the store."""

    def __init__(self, batch_id: str, store: st.Store) -> None:
        self.batch_id = batch_id
        self.store = store
        self.started = time.monotonic()
        self._finished = threading.Event()
        self._changed = threading.Condition()
        self._error: BaseException | None = None

    # -- for subclasses ------------------------------------------------------------------------
    def _notify(self, *_: Any) -> None:
        with self._changed:
            self._changed.notify_all()

    def _set_finished(self, error: BaseException | None = None) -> None:
        self._error = error
        self._finished.set()
        self._notify()

    @property
    def total(self) -> int | None:
        raise NotImplementedError

    def progress(self) -> Progress:
        raise NotImplementedError

    def cancel(self, *, wait: bool = True, timeout: float | None = None) -> None:
        raise NotImplementedError

    def resumed_counts(self) -> dict[str, dict[str, int]]:
        """What this run found from an earlier one, by :attr:`bridge.batch.store.Item.outcome`:
        ``{"kept": {"completed": n, "failed": n}, "retried": {"cancelled": n, "error": n,
        "failed": n}}`` (empty on a fresh batch)."""
        return {"kept": {}, "retried": {}}

    # -- public --------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._finished.is_set()

    @property
    def stopped_by(self) -> errors.BridgeError | None:
        """The endpoint-wide error (wrong key, unknown endpoint, unreachable base URL) that
        stopped the batch before every input ran; :meth:`wait` raises it too."""
        error = self._error if self.done else None
        return error if isinstance(error, errors.BridgeError) else None

    def _rate(self, finished_here: int) -> float:
        """Inputs finished per second by this run (those finished before a resume excluded)."""
        elapsed = time.monotonic() - self.started
        return finished_here / elapsed if elapsed > 0 else 0.0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the batch ends (True) or ``timeout`` passes (False); re-raises an
        engine crash, or the endpoint-wide error that stopped the batch (:attr:`stopped_by`)."""
        ended = self._finished.wait(timeout)
        if ended and self._error is not None:
            raise self._error
        return ended

    def as_completed(self, timeout: float | None = None) -> Iterator[Result]:
        """Results in completion order (inputs finished before a resume come first), until the
        batch ends. Raises :class:`bridge.errors.Timeout` if ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seq = 0
        while True:
            ended = self.done  # read before the store: a batch that ends now is drained below
            new_seq, page = self.store.completed_since(seq)
            for item in page:
                yield Result.from_item(item, item.index)
            if new_seq != seq:
                seq = new_seq
                continue
            if ended:
                self.wait(0)
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.Timeout(f"batch {self.batch_id} still running after {timeout} s", None, None,
                                     None, timeout)
            with self._changed:
                self._changed.wait(0.5 if remaining is None else min(0.5, remaining))

    def iter_results(self) -> Iterator[Result]:
        """Every input's result in input order (PENDING for those that never ran)."""
        total = self.total
        expected = 0
        for item in self.store.items():
            while expected < item.index:
                yield Result.from_item(None, expected)
                expected += 1
            yield Result.from_item(item, item.index)
            expected = item.index + 1
        while total is not None and expected < total:
            yield Result.from_item(None, expected)
            expected += 1

    def results(self, timeout: float | None = None) -> list[Result]:
        """Wait for the batch, then every result in input order (a list: mind big batches)."""
        if not self.wait(timeout):
            raise errors.Timeout(f"batch {self.batch_id} still running after {timeout} s", None, None, None,
                                 timeout)
        return list(self.iter_results())

    def failures(self) -> list[Result]:
        """Inputs that finished without COMPLETED, with their errors, in input order."""
        return [
            r for r in self.iter_results()
            if r.status not in ("COMPLETED", "PENDING")
            and not (isinstance(r.error, dict) and r.error.get("type") == "BatchCancelled")
        ]

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> BatchHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.done:
            self.cancel()
        self.close()
