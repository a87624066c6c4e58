"""The asyncio client on ``aiohttp``: :class:`AsyncioEndpoint` and :class:`AsyncioJob`,
with the same methods and semantics as the sync client (run_sync, policy and webhook
included) and the SDK's call shapes. Nothing needs a timeout to work. The endpoint owns
its ``aiohttp.ClientSession`` (made on first use, inside the running loop) unless one is
passed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bridge import errors
from bridge.client._base import (
    EndpointBase,
    JobBase,
    log_retry,
    long_poll_unsupported,
    needs_error_text,
    now,
    stream_chunks,
    stream_ended,
)
from bridge.client._policy import PollPolicy, RetryPolicy, Waiter
from bridge.client._wire import CONNECT_TIMEOUT, Call, terminal

__all__ = ["AsyncioEndpoint", "AsyncioJob"]


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
    retry=None, poll=None)``: the SDK passes its aiohttp session second, so does this;
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
    ) -> None:
        super().__init__(endpoint_id, api_key, base_url, retry, poll)
        self._owns_session = session is None
        self._session = session
        self._session_loop: asyncio.AbstractEventLoop | None = None
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
        assert self._session is not None
        return self._session

    # -- the one place bytes move ---------------------------------------------------------

    async def _send(self, call: Call, deadline: float | None = None) -> dict[str, Any]:
        """Send ``call``, retrying per the RetryPolicy; the JSON body or a bridge error."""
        started = now()
        attempt = 0
        session = self.session
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=call.read_timeout)
        while True:
            attempt += 1
            self._count()
            try:
                async with session.request(
                    call.method, call.url, data=call.body, headers=call.headers,
                    timeout=timeout, allow_redirects=False, proxy=self._proxy, proxy_auth=self._proxy_auth,
                ) as resp:
                    raw = await resp.read()
                    status, headers = resp.status, resp.headers
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                error: errors.BridgeError = self._wire.transport_error(call, exc)
            else:
                try:
                    return self._wire.response(call, status, headers, raw)
                except errors.EndpointError as exc:
                    error = exc
            delay = self.retry_policy.next_delay(attempt, error, started, deadline)
            if delay is None:
                raise error
            log_retry(self.endpoint_id, call.route, attempt, error, delay)
            await asyncio.sleep(delay)

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
        call = self._wire.run(input, webhook, policy, s3_config, idempotency_key)
        body = await self._send(call)
        # A repeated Idempotency-Key may name a job that already ended; /run's answer then
        # lacks the output, so only a non-terminal status is kept.
        return AsyncioJob(self, str(body["id"]), None if terminal(body) else body)

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
        waiter = Waiter(timeout, self.poll_policy)
        if timeout is not None and timeout < 1:
            job = await self.run(input, webhook=webhook, policy=policy, s3_config=s3_config,
                                 idempotency_key=idempotency_key)
            return await job.output(waiter.remaining(), cancel_on_timeout=cancel_on_timeout)
        # The endpoint holds runsync up to the long-poll window, then we wait like output().
        hold = self.poll_policy.long_poll if self.poll_policy.long_poll > 0 else 90.0
        remaining = waiter.remaining()
        call = self._wire.runsync(input, hold if remaining is None else min(hold, remaining), webhook,
                                  policy, s3_config, idempotency_key)
        body = await self._send(call, waiter.deadline)
        job = AsyncioJob(self, str(body["id"]), body)
        if terminal(body):
            return job._outcome(body)
        return await job._wait(waiter, cancel_on_timeout)

    def job(self, job_id: str) -> AsyncioJob:
        """An :class:`AsyncioJob` for a job id you already have (nothing is sent)."""
        return AsyncioJob(self, job_id)

    async def health(self, timeout: float = 3) -> dict[str, Any]:
        return await self._send(self._wire.health(timeout))

    async def purge_queue(self, timeout: float = 3) -> dict[str, Any]:
        return await self._send(self._wire.purge_queue(timeout))

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            if self._session_loop is asyncio.get_running_loop():
                await self._session.close()
            self._session = None

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
        return await self._fetch(wait)

    async def _fetch(self, wait: float | None, deadline: float | None = None) -> dict[str, Any]:
        ep = self.endpoint
        if wait is not None and wait > 0 and ep.long_poll is not False:
            try:
                body = await ep._send(ep._wire.status(self.job_id, wait), deadline)
            except errors.EndpointError as exc:
                if not long_poll_unsupported(exc):
                    raise
                body = await ep._send(ep._wire.status(self.job_id), deadline)
                ep.long_poll = False
            else:
                ep.long_poll = True
            return self._remember(body)
        return self._remember(await ep._send(ep._wire.status(self.job_id), deadline))

    async def status(self) -> str:
        final = self._final()
        if final is not None:
            return str(final["status"])
        return str((await self.fetch())["status"])

    async def output(self, timeout: float | None = None, *, cancel_on_timeout: bool = False) -> Any:
        """Wait until the job ends; see :meth:`bridge.Job.output`."""
        final = self._final()
        if final is not None:
            return self._outcome(final)
        return await self._wait(Waiter(timeout, self.endpoint.poll_policy), cancel_on_timeout)

    async def _wait(self, waiter: Waiter, cancel_on_timeout: bool) -> Any:
        while True:
            wait = waiter.long_poll_wait() if self.endpoint.long_poll is not False else None
            before, started = self.last_status, now()
            body = await self._fetch(wait, waiter.deadline)
            if terminal(body):
                return self._outcome(body)
            if waiter.expired():
                status = self.last_status
                note = await self._cancel_quietly() if cancel_on_timeout else ""
                raise self._timeout(waiter, note, status)
            if self._should_pause(wait, now() - started, before, body):
                await asyncio.sleep(waiter.next_pause())

    async def _cancel_quietly(self) -> str:
        try:
            await self.cancel()
        except errors.BridgeError as exc:
            return f"; cancelling it failed: {exc.message}"
        return "; the job was cancelled"

    async def stream(self, timeout: float | None = None) -> AsyncIterator[Any]:
        """Async iterator of chunk outputs; see :meth:`bridge.Job.stream`."""
        ep = self.endpoint
        waiter = Waiter(timeout, ep.poll_policy, stream=True)
        seen = self.last_status
        while True:
            wait = waiter.long_poll_wait() if ep.long_poll is not False else None
            before, started = seen, now()
            body = await ep._send(ep._wire.stream(self.job_id, wait), waiter.deadline)
            chunks = stream_chunks(body)
            seen = body.get("status")
            for chunk in chunks:
                yield chunk
            if stream_ended(body, chunks):
                if needs_error_text(body):
                    body = await self.fetch()
                if body.get("status") in ("FAILED", "TIMED_OUT"):
                    self._outcome(body)
                return
            if chunks:
                waiter.reset()
                continue  # more may be waiting: read again at once
            if waiter.expired():
                raise self._timeout(waiter)
            if self._should_pause(wait, now() - started, before, body):
                await asyncio.sleep(waiter.next_pause())

    async def cancel(self, timeout: float = 3) -> dict[str, Any]:
        body = await self.endpoint._send(self.endpoint._wire.cancel(self.job_id, timeout))
        if body.get("status") == "CANCELLED":
            self._remember({"id": self.job_id, **body})
        return body

    async def retry(self) -> dict[str, Any]:
        body = await self.endpoint._send(self.endpoint._wire.retry(self.job_id))
        self._forget()
        return body
