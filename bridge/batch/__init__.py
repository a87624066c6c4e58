"""Fan-out batch inference: ``bridge.batch(inputs, endpoint_id)``.

In this process by default (the asyncio client on a background thread, results journalled
in SQLite), or through Celery workers when given ``app=`` (results stored per job in Redis
with a completion counter, never through a chord). Either way the call returns at once with
a :class:`~bridge.batch.handle.BatchHandle`::

    handle = bridge.batch(({"prompt": p} for p in prompts), "my-endpoint", concurrency=100)
    for result in handle.as_completed():     # Result(index, job_id, status, output, error)
        print(result.index, result.status)
    ordered = handle.results()                # input order
    handle.failures()                         # FAILED / TIMED_OUT / CANCELLED-remotely inputs
    handle.cancel()                           # cancels every queued and running remote job
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import types
import uuid
from collections.abc import Iterable, Sized
from typing import Any

from bridge.batch.engine import idempotency_key
from bridge.batch.handle import BatchHandle, Progress, Result
from bridge.batch.options import Options
from bridge.batch.store import SqliteStore
from bridge.config import env_int
from bridge.errors import ConfigurationError

__all__ = ["BatchHandle", "Progress", "Result", "batch", "idempotency_key", "open_journal"]

#: Jobs in flight at once when ``concurrency`` is not given (setting BRIDGE_BATCH_CONCURRENCY).
DEFAULT_CONCURRENCY = 200


def open_journal(path: str, batch_id: str | None, endpoint_id: str) -> tuple[SqliteStore, str]:
    """Open (or create) the SQLite journal at ``path`` and return it with the batch id.

    A journal already holding another batch id (other inputs or endpoint) is refused rather
    than mixed up with this batch. A new journal gets a random ``nonce`` that goes into every
    idempotency key, so it never receives the jobs of an earlier run with the same batch id.
    """
    store = SqliteStore(path)
    known = store.get_meta("batch_id")
    if known is None:
        known = batch_id or uuid.uuid4().hex[:16]
        store.set_meta("nonce", secrets.token_hex(4))
        store.set_meta("batch_id", known)
        store.set_meta("endpoint_id", endpoint_id)
    elif batch_id is not None and known != batch_id:
        store.close()
        raise ConfigurationError(
            f"the journal {path} belongs to another batch ({known}, not {batch_id})", None, endpoint_id,
            "that the inputs and endpoint are the ones of the interrupted run, or delete the journal to start over",
        )
    return store, known


def batch(
    inputs: Iterable[Any],
    endpoint_id: str,
    *,
    concurrency: int | None = None,
    max_queue_depth: int | None = None,
    rate: str | tuple[int, float] | None = None,
    policy: dict[str, Any] | None = None,
    journal: str | None = None,
    batch_id: str | None = None,
    app: Any = None,
    webhooks: Any = None,
    api_key: str | None = None,
    base_url: str | None = None,
    hooks: Any = None,
    retry_failed: bool = False,
    timeout: float | None = None,
    stream: bool = False,
) -> BatchHandle:
    """Run ``endpoint_id`` over every input; returns a handle at once.

    - ``concurrency``: jobs in flight at once (default 200, BRIDGE_BATCH_CONCURRENCY).
    - ``max_queue_depth``: jobs allowed to wait in the endpoint's queue (default: concurrency).
    - ``rate``: /run budget to pace submissions to, ``"1000/10"`` (default: RunPod's documented
      budget against RunPod, none against other base URLs; BRIDGE_BATCH_RUN_RATE).
    - ``journal``: SQLite file to journal to and resume from (default: a temporary file).
    - ``app``: a Celery app: run each input as a ``bridge.batch_item`` task on its workers,
      storing results per job in Redis (see :mod:`bridge.batch.celery`).
    - ``webhooks``: a :class:`bridge.webhooks.WebhookReceiver` to be told of job ends instead
      of polling for them.
    - ``hooks``: the plugin pipeline (:class:`bridge.hooks.Hooks`) run around each job in this
      process (default: ``Hooks.from_settings()``; Celery mode runs the workers' own).
    - ``retry_failed``: when resuming, run again the inputs the endpoint FAILED (or TIMED_OUT);
      cancelled inputs and bridge-side errors are always run again, COMPLETED ones never.
    - ``timeout``: seconds each job may take; past it the job is cancelled at the endpoint
      and the input fails with :class:`bridge.errors.Timeout`.
    - ``stream``: read each job's ``/stream``; an input's output is its list of chunks.

    Options are checked first (:class:`bridge.errors.ConfigurationError`: ``policy`` must be a
    dict). A wrong key, unknown endpoint or unreachable base URL stops the batch with that
    error (:attr:`BatchHandle.stopped_by`, raised by ``wait()``) instead of failing every input.
    """
    options = Options(
        concurrency=concurrency or env_int("BRIDGE_BATCH_CONCURRENCY", DEFAULT_CONCURRENCY),
        max_queue_depth=max_queue_depth,
        run_rate=None,
        policy=policy,
        api_key=api_key,
        base_url=base_url,
        retry_failed=retry_failed,
        timeout=timeout,
        stream=stream,
    ).validate()
    from bridge.batch.admission import Rate

    options.run_rate = Rate.parse(rate) if rate is not None else None
    total = len(inputs) if isinstance(inputs, Sized) else None
    if app is not None:
        from bridge.batch.producer import CeleryBatch

        return CeleryBatch(app, batch_id or uuid.uuid4().hex[:16], endpoint_id, inputs, options, total=total)

    from bridge.batch.local import LocalBatch

    owns_temp = journal is None
    if journal is None:
        fd, journal = tempfile.mkstemp(prefix="bridge-batch-", suffix=".sqlite")
        os.close(fd)
    store, batch_id = open_journal(journal, batch_id, endpoint_id)
    waiter = webhooks.waiter() if webhooks is not None else None
    handle = LocalBatch(batch_id, endpoint_id, inputs, store, options, waiter=waiter, total=total, hooks=hooks)
    if owns_temp:
        handle.temp_journal = journal  # type: ignore[attr-defined]
    return handle


class _CallableModule(types.ModuleType):
    """``bridge.batch`` is both this package and the function: importing the package makes
    Python bind ``bridge.batch`` to the module, so the module itself must be callable for
    ``bridge.batch(inputs, endpoint_id)`` to keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> BatchHandle:
        return batch(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
