"""Running a batch in this process: the asyncio engine on a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from bridge import errors
from bridge.batch.engine import Engine
from bridge.batch.handle import BatchHandle, Progress


class LocalBatch(BatchHandle):
    """A batch run by :class:`~bridge.batch.engine.Engine` on its own thread and event loop."""

    def __init__(self, batch_id: str, *engine_args: Any, owns_store: bool = True, total: int | None = None,
                 **engine_options: Any) -> None:
        """``LocalBatch(batch_id, endpoint_id, inputs, store, options, *, owns_store=True,
        total=None, waiter=None, hooks=None)``: the rest goes to the :class:`Engine`."""
        self._loop = asyncio.new_event_loop()
        self.engine = Engine(batch_id, *engine_args, on_finish=self._notify, **engine_options)
        super().__init__(batch_id, self.engine.store)
        self._expected_total = total
        self.endpoint_id = self.engine.endpoint_id
        self._owns_store = owns_store
        self._thread = threading.Thread(target=self._main, name=f"bridge-batch-{batch_id}", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        error: BaseException | None = None
        try:
            self._loop.run_until_complete(self.engine.run())
            error = self.engine.stopped_by  # an endpoint-wide error: wait() raises it
        except BaseException as exc:  # handed to the caller by wait()
            error = exc
        finally:
            try:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()
            self._set_finished(error)

    @property
    def total(self) -> int | None:
        """Number of inputs: known up front when given (or a sized collection), else once the
        engine has read them all."""
        return self.engine.total if self.engine.total is not None else self._expected_total

    def resumed_counts(self) -> dict[str, dict[str, int]]:
        c = self.engine.counters
        return {"kept": dict(c.kept), "retried": dict(c.retried)}

    def progress(self) -> Progress:
        c = self.engine.counters
        return Progress(
            total=self.total,
            done=c.done,
            failed=c.failed,
            in_flight=c.in_flight,
            cancelled=c.cancelled,
            elapsed=time.monotonic() - self.started,
            rate=self._rate(c.done + c.failed - c.skipped),
            throttled=c.throttled,
        )

    def cancel(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop submitting and cancel every job in flight at the endpoint; with ``wait``, return
        once all of them are cancelled (and journalled for resubmission)."""
        if not self.done:
            try:
                self._loop.call_soon_threadsafe(self.engine.cancel)
            except RuntimeError:
                pass  # the loop just closed: the batch ended on its own
        if wait and not self._finished.wait(timeout):
            raise errors.Timeout(f"batch {self.batch_id} did not finish cancelling in {timeout} s", None,
                                 self.endpoint_id, None, timeout)

    def close(self) -> None:
        if self._owns_store:
            super().close()
