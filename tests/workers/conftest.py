"""Fixtures for the real-worker tests: local endpoints whose jobs run in real ``runpod``
worker processes (the examples in ``examples/runpod_worker/``).

Worker processes take a second or two to start, so endpoints are shared: ``sync_worker``
(two ``handler.py`` workers) for the whole package, the others per module. Tests must leave
the shared workers idle (no job still running) when they end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.local.worker_procs import WorkerRunner
from bridge.testing import LocalEndpoint, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "runpod_worker"

__all__ = ["wait_until"]  # re-exported for the test modules (bridge.testing's)


def worker_command(script: str, *flags: str) -> list[str]:
    """The command that runs one of the example workers with this interpreter."""
    return [sys.executable, str(EXAMPLES / script), *flags]


def on_loop(ep: LocalEndpoint, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the endpoint server's loop (worker state lives there) and return its value."""

    async def call() -> Any:
        return fn()

    return ep.run_in_loop(call()).result(10)


def runner(ep: LocalEndpoint, endpoint_id: str | None = None) -> WorkerRunner:
    found = ep.endpoint(endpoint_id).runner
    assert isinstance(found, WorkerRunner)
    return found


def pids(ep: LocalEndpoint, endpoint_id: str | None = None) -> dict[str, int]:
    return dict(on_loop(ep, runner(ep, endpoint_id).supervisor.pids))


def holder(ep: LocalEndpoint, job_id: str, endpoint_id: str | None = None) -> str | None:
    """The id of the worker that holds ``job_id`` now, if any."""
    host = runner(ep, endpoint_id).host

    def find() -> str | None:
        for wid, record in host.workers.items():
            if job_id in record.jobs:
                return wid
        return None

    return on_loop(ep, find)  # type: ignore[no-any-return]


def wait_ready(ep: LocalEndpoint, count: int, endpoint_id: str | None = None, timeout: float = 30.0) -> None:
    """Wait until ``count`` workers are idle and waiting in a job-take poll."""
    wait_until(lambda: ep.health(endpoint_id)["workers"]["ready"] >= count, timeout)


def make_worker_endpoint(command: list[str], count: int = 1, endpoint_id: str = "workers",
                         **options: Any) -> LocalEndpoint:
    worker_options = {"quiet": True, "stop_grace": 5.0, **options.pop("worker_options", {})}
    return LocalEndpoint(None, endpoint_id=endpoint_id, worker_command=command, worker_count=count,
                         worker_options=worker_options, **options)


@pytest.fixture(scope="package")
def sync_worker() -> Iterator[LocalEndpoint]:
    """Two ``handler.py`` workers (sync handler), ready to take jobs."""
    ep = make_worker_endpoint(worker_command("handler.py"), count=2, endpoint_id="sync")
    try:
        wait_ready(ep, 2)
        yield ep
    finally:
        ep.close()


@pytest.fixture
def idle_sync_worker(sync_worker: LocalEndpoint) -> Iterator[LocalEndpoint]:
    """``sync_worker``, checked to be fully idle before and after the test."""
    wait_ready(sync_worker, 2)
    yield sync_worker
    wait_ready(sync_worker, 2)


def job_field(ep: LocalEndpoint, job_id: str, key: str = "status") -> Any:
    """One field of the server's record of a job (None once the job is gone)."""
    state = ep.job_state(job_id)
    return None if state is None else state.get(key)
