"""The synchronous client on ``requests``: :class:`Endpoint` and :class:`Job`, named and
called like ``runpod.Endpoint`` and ``runpod.endpoint.Job`` so that SDK users change one
import. One pooled, thread-safe session per endpoint. This module only moves bytes and
sleeps: what to send and what it means is in :mod:`bridge.client._plans`, shared with the
asyncio twin (:mod:`bridge.client.aio`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import requests

from bridge.client import _plans as plans
from bridge.client._base import EndpointBase, JobBase
from bridge.client._policy import PollPolicy, RetryPolicy
from bridge.lifecycle.drive import SyncDriver
from bridge.lifecycle.steps import Plan
from bridge.transport import RequestsTransport

__all__ = ["Endpoint", "Job"]

T = TypeVar("T")

#: Connections kept per host; threads beyond it still work but open throw-away connections.
POOL_SIZE = 256


class Endpoint(EndpointBase):
    """A RunPod-style serverless endpoint.

    ``Endpoint(endpoint_id, api_key=None, base_url=None, *, retry=None, poll=None,
    session=None, plugins=False)``: the key defaults to ``bridge.api_key`` then ``RUNPOD_API_KEY``, the
    base URL to ``bridge.endpoint_url_base``, ``RUNPOD_ENDPOINT_BASE_URL``, then
    ``https://api.runpod.ai/v2``, read now. Safe to share between threads.
    """

    def __init__(
        self,
        endpoint_id: str,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        session: requests.Session | None = None,
        plugins: bool = False,
    ) -> None:
        super().__init__(endpoint_id, api_key, base_url, retry, poll, plugins)
        self.transport = RequestsTransport(session, pool_size=POOL_SIZE)
        self.session = self.transport.session
        self._driver = SyncDriver(self.transport.send, self.hooks)

    def _steps(self, plan: Plan[T]) -> Iterator[Any]:
        """Run ``plan``: yield what it emits, return its value."""
        return self._driver.steps(plan)

    def _drive(self, plan: Plan[T]) -> T:
        return self._driver.run(plan)

    def _new_job(self, job_id: str, body: Mapping[str, Any] | None = None) -> Job:
        return Job(self, job_id, body)

    # -- operations -----------------------------------------------------------------------

    def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Mapping[str, Any] | None = None,
        s3_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job (``POST /run``) and return it at once."""
        job = self._drive(plans.run(self, input, webhook, policy, s3_config, idempotency_key))
        assert isinstance(job, Job)
        return job

    def run_sync(
        self,
        input: Any,
        timeout: float | None = 86400,
        *,
        webhook: str | None = None,
        policy: Mapping[str, Any] | None = None,
        s3_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        cancel_on_timeout: bool = False,
    ) -> Any:
        """Run a job and return its output (``POST /runsync?wait=``, then waiting for it if
        the endpoint answered before the end). Raises :class:`bridge.errors.Timeout` after
        ``timeout`` seconds of wall time, and JobFailed/JobTimedOut/JobCancelled."""
        return self._drive(plans.run_sync(self, input, timeout, webhook, policy, s3_config,
                                          idempotency_key, cancel_on_timeout))

    def job(self, job_id: str) -> Job:
        """A :class:`Job` for a job id you already have (nothing is sent)."""
        return Job(self, job_id)

    def health(self, timeout: float = 3) -> dict[str, Any]:
        """``GET /health``: job counts and worker counts."""
        return self._drive(plans.send(self, self._wire.health(timeout)))

    def purge_queue(self, timeout: float = 3) -> dict[str, Any]:
        """``POST /purge-queue``: remove every queued job (running ones keep running)."""
        return self._drive(plans.send(self, self._wire.purge_queue(timeout)))

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Job(JobBase):
    """A submitted job. ``output()`` waits for the end; failures raise typed errors."""

    endpoint: Endpoint

    def __init__(self, endpoint: Endpoint, job_id: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(endpoint, job_id, body)
        self.endpoint = endpoint

    def fetch(self, wait: float | None = None) -> dict[str, Any]:
        """One status look, returning the raw status body. With ``wait`` (seconds) the
        endpoint may hold the request until the job ends (``/status-sync?wait=``); an
        endpoint without that route is remembered and asked ``/status`` from then on."""
        return self.endpoint._drive(plans.fetch(self, wait))

    def status(self) -> str:
        """The job's status now (kept without asking again once terminal)."""
        return self.endpoint._drive(plans.status(self))

    def output(self, timeout: float | None = None, *, cancel_on_timeout: bool = False) -> Any:
        """Wait until the job ends and return its output. FAILED, TIMED_OUT and CANCELLED
        raise JobFailed, JobTimedOut, JobCancelled; after ``timeout`` seconds
        :class:`bridge.errors.Timeout` (cancelling the job first if ``cancel_on_timeout``)."""
        return self.endpoint._drive(plans.output(self, timeout, cancel_on_timeout))

    def stream(self, timeout: float | None = None) -> Iterator[Any]:
        """Yield chunk outputs as the job produces them (``GET /stream``). Ends on COMPLETED
        and CANCELLED; raises JobFailed/JobTimedOut after the last chunk."""
        yield from self.endpoint._steps(plans.stream(self, timeout))

    def stream_batches(self, timeout: float | None = None) -> Iterator[list[Any]]:
        """Like :meth:`stream`, but one list per read of ``/stream`` (never empty)."""
        yield from self.endpoint._steps(plans.stream(self, timeout, batches=True))

    def cancel(self, timeout: float = 3) -> dict[str, Any]:
        """``POST /cancel``: stop the job (queued or running)."""
        return self.endpoint._drive(plans.cancel(self, timeout))

    def retry(self) -> dict[str, Any]:
        """``POST /retry``: requeue a FAILED or TIMED_OUT job under the same id."""
        return self.endpoint._drive(plans.retry(self))
