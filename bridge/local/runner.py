"""The in-process runner: executes an endpoint's jobs with a Python handler.

It takes jobs from the :class:`~bridge.local.jobs.JobStore` through the runner API
documented there, so it can be swapped for a runner that feeds external workers. What a
handler's return value or exception turns into follows RunPod's worker (reference §9):

- any value → COMPLETED with that ``output``; ``{}`` → COMPLETED with no output key;
- ``{"error": msg, **rest}`` → FAILED with ``error`` (``output`` = rest when non-empty);
- ``refresh_worker`` is dropped from dict outputs;
- an exception → FAILED, ``error`` = a JSON string with ``error_type``, ``error_message``,
  ``error_traceback``, ``hostname``, ``worker_id`` and ``runpod_version``;
- generators stream each yield; the final output is every chunk with
  ``return_aggregate_stream`` and ``[]`` without; yielding ``{"error": msg}`` fails the job.

Async handlers and async generators run as tasks on the server's loop (cancel → their
``CancelledError``). Sync handlers and sync generators run in a thread pool so they never
block the server; a thread cannot be interrupted, so a cancelled or timed-out sync handler
runs on to its end and its result is dropped (a sync generator stops at its next yield).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bridge import __version__, errors
from bridge.local.jobs import MISSING, JobStore, LocalJob
from bridge.local.loading import ASYNC, ASYNC_GEN, SYNC_GEN, Handler, handler_kind

log = logging.getLogger(__name__)

#: Job id → (loop, store, job) of jobs running in this process, for :func:`progress_update`.
_ACTIVE: dict[str, tuple[asyncio.AbstractEventLoop, JobStore, LocalJob]] = {}
_MAX_THREADS = 1024


def progress_update(job: dict[str, Any], progress: Any) -> None:
    """Report progress from inside a handler; ``/status`` shows it as ``output`` while IN_PROGRESS.

    Same call shape as ``runpod.serverless.progress_update(job, progress)``. Safe from the
    handler's thread or from the event loop; the update is recorded before the job's result.
    """
    entry = _ACTIVE.get(job.get("id", "")) if isinstance(job, dict) else None
    if entry is None:
        log.warning("progress_update: job %r is not running on a local endpoint", job.get("id") if isinstance(job, dict) else job)
        return
    loop, store, local = entry
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        store.progress(local, progress)
    else:
        loop.call_soon_threadsafe(store.progress, local, progress)


def exception_error(exc: BaseException, worker_id: str) -> str:
    """RunPod's error string for a raised exception: JSON text with the documented keys."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return json.dumps({
        "error_type": str(type(exc)),
        "error_message": errors.scrub(str(exc)),
        "error_traceback": errors.scrub(tb),
        "hostname": socket.gethostname(),
        "worker_id": worker_id,
        "runpod_version": f"bridge-local {__version__}",
    })


def normalise_result(value: Any) -> tuple[Any, str | None]:
    """(output, error) for a handler's return value, as RunPod's worker reports it."""
    if not isinstance(value, dict):
        return value, None
    rest = {k: v for k, v in value.items() if k != "refresh_worker"}
    if "error" in rest and rest["error"] is not None:
        error = rest.pop("error")
        # RunPod wants a string; a dict error silently "completed" there (issue #299).
        text = error if isinstance(error, str) else json.dumps(error, default=str)
        return (rest if rest else MISSING), text
    rest.pop("error", None)
    return (rest if rest else MISSING), None


def _error_chunk(chunk: Any) -> str | None:
    if isinstance(chunk, dict) and chunk.get("error"):
        error = chunk["error"]
        return error if isinstance(error, str) else json.dumps(error, default=str)
    return None


class HandlerRunner:
    """Runs up to ``workers`` jobs of one store at once with a Python handler."""

    def __init__(
        self,
        store: JobStore,
        handler: Handler,
        *,
        workers: int = 64,
        return_aggregate_stream: bool = False,
        cold_start: Any = None,
    ) -> None:
        self.store = store
        self.handler = handler
        self.kind = handler_kind(handler)
        self.workers = max(1, int(workers))
        self.return_aggregate_stream = return_aggregate_stream
        #: Callable returning the cold-start delay in seconds (read on each cold start).
        self.cold_start = cold_start or (lambda: 0.0)
        self.warm = False
        self.initializing = False
        self.worker_id = f"bridge-local-{os.getpid()}-{store.endpoint_id}"
        self._slots = asyncio.Semaphore(self.workers)
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def close(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            job = None
            try:
                job = await self.store.take()
                if not self.warm:
                    delay = float(self.cold_start() or 0.0)
                    if delay > 0:
                        self.initializing = True
                        try:
                            await asyncio.sleep(delay)
                        finally:
                            self.initializing = False
                    self.warm = True
            except BaseException:
                self._slots.release()
                raise
            if job is None or not self.store.start(job):
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _run(self, job: LocalJob) -> None:
        task = asyncio.current_task()
        stop = threading.Event()

        def on_stop(reason: str) -> None:
            stop.set()
            if task is not None:
                task.cancel()

        self.store.on_stop(job, on_stop)
        payload = job.payload()
        _ACTIVE[job.id] = (asyncio.get_running_loop(), self.store, job)
        try:
            output, error = await self._call(job, payload, stop)
        except asyncio.CancelledError:
            if job.stopped:
                return  # the store already recorded CANCELLED / TIMED_OUT / expiry
            raise
        except Exception as exc:
            output, error = MISSING, exception_error(exc, self.worker_id)
        finally:
            if _ACTIVE.get(job.id, (None, None, None))[2] is job:
                del _ACTIVE[job.id]
        self.store.finish(job, output, error)

    async def _call(self, job: LocalJob, payload: dict[str, Any], stop: threading.Event) -> tuple[Any, str | None]:
        if self.kind == ASYNC:
            return normalise_result(await self.handler(payload))
        if self.kind == ASYNC_GEN:
            return await self._async_stream(job, payload)
        loop = asyncio.get_running_loop()
        if self.kind == SYNC_GEN:
            return await loop.run_in_executor(self._threads(), self._sync_stream, loop, job, payload, stop)
        result = await loop.run_in_executor(self._threads(), self.handler, payload)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            result = await result
        return normalise_result(result)

    async def _async_stream(self, job: LocalJob, payload: dict[str, Any]) -> tuple[Any, str | None]:
        collected: list[Any] = []
        agen = self.handler(payload)
        try:
            async for chunk in agen:
                error = _error_chunk(chunk)
                if error is not None:
                    return MISSING, error
                self.store.add_chunk(job, chunk)
                if self.return_aggregate_stream:
                    collected.append(chunk)
        finally:
            await agen.aclose()
        return collected, None

    def _sync_stream(
        self, loop: asyncio.AbstractEventLoop, job: LocalJob, payload: dict[str, Any], stop: threading.Event
    ) -> tuple[Any, str | None]:
        # Runs in a worker thread; chunks reach the store through the loop, in order and
        # before the result (call_soon_threadsafe is FIFO, and so is the executor's reply).
        collected: list[Any] = []
        gen = self.handler(payload)
        try:
            for chunk in gen:
                if stop.is_set():
                    break
                error = _error_chunk(chunk)
                if error is not None:
                    return MISSING, error
                loop.call_soon_threadsafe(self.store.add_chunk, job, chunk)
                if self.return_aggregate_stream:
                    collected.append(chunk)
        finally:
            gen.close()
        return collected, None

    def _threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=min(self.workers, _MAX_THREADS), thread_name_prefix=f"bridge-local-{self.store.endpoint_id}"
            )
        return self._executor
