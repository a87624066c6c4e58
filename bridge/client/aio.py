"""The asyncio client on ``aiohttp``: :class:`AsyncioEndpoint` and :class:`AsyncioJob`,
with the same methods and semantics as the sync client (run_sync, policy and webhook
included) and the SDK's call shapes; both drive the same plans (:mod:`bridge.client._plans`),
so only the I/O differs. Nothing needs a timeout to work. The endpoint owns
its ``aiohttp.ClientSession`` (made on first use, inside the running loop) unless one is
passed; an owned session is closed by ``close()``/``async with``, or else when its loop
shuts down (``asyncio.run`` ending), so the SDK-style ``AsyncioEndpoint("id")`` without a
session never leaves "Unclosed client session" warnings behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, TypeVar

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bridge.client import _plans as plans
from bridge.client._base import EndpointBase, JobBase
from bridge.client._policy import PollPolicy, RetryPolicy
from bridge.client._wire import CONNECT_TIMEOUT, Call
from bridge.lifecycle.drive import AsyncDriver
from bridge.lifecycle.steps import Plan
from bridge.transport import Reply

__all__ = ["AsyncioEndpoint", "AsyncioJob"]

T = TypeVar("T")


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    """A pooled session with no connection cap (as the SDK's), since each waiting job holds
    one long poll. Proxies come from :func:`env_proxy`, resolved once per endpoint:
    aiohttp's ``trust_env=True`` would look them (and .netrc) up in a thread on every
    request, which halved throughput. No cookies: the API sets none."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def _closes_at_loop_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Parks until the loop finalises open async generators, then closes ``session``.

    ``asyncio.run`` (and any loop runner calling ``loop.shutdown_asyncgens()``) closes every
    async generator still open in the loop before closing the loop, which is the one
    documented hook at loop shutdown; a generator dropped earlier is finalised on its loop
    too. That lets an owned session close gracefully without the caller's ``close()``."""
    try:
        yield
    finally:
        await session.close()


def _park(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Start :func:`_closes_at_loop_shutdown` for ``session`` in the running loop, synchronously.

    Its first step awaits nothing, so one ``send(None)`` runs it to its ``yield``; the
    loop's first-iteration hook, called by that step, registers it for shutdown."""
    keeper = _closes_at_loop_shutdown(session)
    step = keeper.__anext__()
    try:
        step.send(None)
    except StopIteration:
        pass
    return keeper


def env_proxy(base_url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy HTTP(S)_PROXY/NO_PROXY give for ``base_url`` (aiohttp's own rules)."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return None, None
    return str(proxy), auth


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
        self._driver = AsyncDriver(self._attempt, self.hooks)
        self._owns_session = session is None
        self._session = session
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._keeper: AsyncGenerator[None, None] | None = None
        # A borrowed session brings its own proxy settings (trust_env or not).
        self._proxy, self._proxy_auth = env_proxy(self.base_url) if session is None else (None, None)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session; an owned one is made in the running loop, and made again for a new
        loop (an endpoint reused across ``asyncio.run`` calls, as in Celery tasks)."""
        if self._owns_session:
            loop = asyncio.get_running_loop()
            if self._session is None or self._session.closed or self._session_loop is not loop:
                self._session = new_session()
                self._session_loop = loop
                self._keeper = _park(self._session)
        assert self._session is not None
        return self._session

    # -- the one place bytes move ---------------------------------------------------------

    async def _attempt(self, call: Call) -> Reply | Exception:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=call.read_timeout)
        try:
            async with self.session.request(
                call.method, call.url, data=call.body, headers=call.headers,
                timeout=timeout, allow_redirects=False, proxy=self._proxy, proxy_auth=self._proxy_auth,
            ) as resp:
                return Reply(resp.status, resp.headers, await resp.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return exc

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
        if self._owns_session and self._session is not None and not self._session.closed:
            if self._session_loop is asyncio.get_running_loop():
                await self._session.close()
                if self._keeper is not None:
                    await self._keeper.aclose()  # its session is closed already
            self._session = None
            self._keeper = None

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
