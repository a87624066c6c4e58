"""The asyncio client on ``aiohttp``: :class:`AsyncioEndpoint` and :class:`AsyncioJob`,
with the same methods and semantics as the sync client (run_sync, policy and webhook
included) and the SDK's call shapes; both drive the same plans (:mod:`bridge.client._plans`),
so only the I/O differs. Nothing needs a timeout to work. Bytes move through an
:class:`~bridge.transport.AiohttpTransport`, which owns the ``aiohttp.ClientSession`` (made
on first use, inside the running loop) unless one is passed, and closes an owned one on
``close()``/``async with`` or else when its loop shuts down, so the SDK-style
``AsyncioEndpoint("id")`` never leaves "Unclosed client session" warnings behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import aiohttp

from bridge.client import _plans as plans
from bridge.client._base import EndpointBase, JobBase
from bridge.client._policy import PollPolicy, RetryPolicy
from bridge.lifecycle.drive import AsyncDriver
from bridge.lifecycle.steps import Plan
from bridge.transport import AiohttpTransport

__all__ = ["AsyncioEndpoint", "AsyncioJob"]

T = TypeVar("T")


class AsyncioEndpoint(EndpointBase):
    """The asyncio twin of :class:`bridge.Endpoint`.

    ``AsyncioEndpoint(endpoint_id, session=None, api_key=None, base_url=None, *,
    retry=None, poll=None, plugins=False)``: the SDK passes its aiohttp session second, so does this;
    ours is optional. Use ``async with`` or ``await endpoint.close()`` to release an owned
    session.
    """

    def __init__(
        self,
        endpoint_id: str,
        session: aiohttp.ClientSession | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        plugins: bool = False,
    ) -> None:
        super().__init__(endpoint_id, api_key, base_url, retry, poll, plugins)
        self.transport = AiohttpTransport(session)
        self._driver = AsyncDriver(self.transport.send, self.hooks)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session; an owned one is made in the running loop, and made again for a new
        loop (an endpoint reused across ``asyncio.run`` calls, as in Celery tasks)."""
        return self.transport.session

    async def _drive(self, plan: Plan[T]) -> T:
        """Run ``plan`` (which emits nothing): perform its steps, return its value."""
        return await self._driver.run(plan)

    def _emitted(self, plan: Plan[None]) -> AsyncIterator[Any]:
        """Run a streaming plan, yielding what it emits."""
        return self._driver.emitted(plan)

    def _new_job(self, job_id: str, body: Mapping[str, Any] | None = None) -> AsyncioJob:
        return AsyncioJob(self, job_id, body)

    # -- operations -----------------------------------------------------------------------

    async def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Mapping[str, Any] | None = None,
        s3_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncioJob:
        """Submit a job (``POST /run``) and return it at once."""
        job = await self._drive(plans.run(self, input, webhook, policy, s3_config, idempotency_key))
        assert isinstance(job, AsyncioJob)
        return job

    async def run_sync(
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
        """Run a job and return its output; see :meth:`bridge.Endpoint.run_sync`."""
        return await self._drive(plans.run_sync(self, input, timeout, webhook, policy, s3_config,
                                                idempotency_key, cancel_on_timeout))

    def job(self, job_id: str) -> AsyncioJob:
        """An :class:`AsyncioJob` for a job id you already have (nothing is sent)."""
        return AsyncioJob(self, job_id)

    async def health(self, timeout: float = 3) -> dict[str, Any]:
        return await self._drive(plans.send(self, self._wire.health(timeout)))

    async def purge_queue(self, timeout: float = 3) -> dict[str, Any]:
        return await self._drive(plans.send(self, self._wire.purge_queue(timeout)))

    async def close(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncioEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncioJob(JobBase):
    """The asyncio twin of :class:`bridge.Job`: the same methods, awaited."""

    endpoint: AsyncioEndpoint

    def __init__(self, endpoint: AsyncioEndpoint, job_id: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(endpoint, job_id, body)
        self.endpoint = endpoint

    async def fetch(self, wait: float | None = None) -> dict[str, Any]:
        """One status look (raw body); with ``wait`` seconds, a long poll where offered."""
        return await self.endpoint._drive(plans.fetch(self, wait))

    async def status(self) -> str:
        return await self.endpoint._drive(plans.status(self))

    async def output(self, timeout: float | None = None, *, cancel_on_timeout: bool = False) -> Any:
        """Wait until the job ends; see :meth:`bridge.Job.output`."""
        return await self.endpoint._drive(plans.output(self, timeout, cancel_on_timeout))

    async def stream(self, timeout: float | None = None) -> AsyncIterator[Any]:
        """Async iterator of chunk outputs; see :meth:`bridge.Job.stream`."""
        async for chunk in self.endpoint._emitted(plans.stream(self, timeout)):
            yield chunk

    async def stream_batches(self, timeout: float | None = None) -> AsyncIterator[list[Any]]:
        """Like :meth:`stream`, but one list per read of ``/stream`` (never empty)."""
        async for batch in self.endpoint._emitted(plans.stream(self, timeout, batches=True)):
            yield batch

    async def cancel(self, timeout: float = 3) -> dict[str, Any]:
        return await self.endpoint._drive(plans.cancel(self, timeout))

    async def retry(self) -> dict[str, Any]:
        return await self.endpoint._drive(plans.retry(self))
