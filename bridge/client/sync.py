"""The synchronous client on ``requests``: :class:`Endpoint` and :class:`Job`, named and
called like ``runpod.Endpoint`` and ``runpod.endpoint.Job`` so that SDK users change one
import. One pooled, thread-safe session per endpoint; all non-I/O logic is shared with the
asyncio twin (:mod:`bridge.client.aio`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

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

__all__ = ["Endpoint", "Job"]

#: Connections kept per host; threads beyond it still work but open throw-away connections.
POOL_SIZE = 256


def new_session(base_url: str | None = None, pool_size: int = POOL_SIZE) -> requests.Session:
    """A pooled session for ``base_url``. The environment's proxy (HTTP(S)_PROXY, NO_PROXY)
    and CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) are resolved here, once, as
    requests' ``trust_env`` would: left on, it re-reads them (and ~/.netrc) on every
    request, a quarter of the client's CPU per request. Auth is our Bearer header."""
    session = requests.Session()
    # Retries are ours (RetryPolicy, on http and https alike), so urllib3's are off.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if base_url is not None:
        session.trust_env = False
        session.proxies = dict(get_environ_proxies(base_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    return session


class Endpoint(EndpointBase):
    """A RunPod-style serverless endpoint.

    ``Endpoint(endpoint_id, api_key=None, base_url=None, *, retry=None, poll=None,
    session=None)``: the key defaults to ``bridge.api_key`` then ``RUNPOD_API_KEY``, the
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
    ) -> None:
        super().__init__(endpoint_id, api_key, base_url, retry, poll)
        self._owns_session = session is None
        self.session = session if session is not None else new_session(self.base_url)

    # -- the one place bytes move ---------------------------------------------------------

    def _send(self, call: Call, deadline: float | None = None) -> dict[str, Any]:
        """Send ``call``, retrying per the RetryPolicy; the JSON body or a bridge error."""
        started = now()
        attempt = 0
        while True:
            attempt += 1
            self._count()
            try:
                resp = self.session.request(
                    call.method, call.url, data=call.body, headers=call.headers,  # type: ignore[arg-type]
                    timeout=(CONNECT_TIMEOUT, call.read_timeout), allow_redirects=False,
                )
            except requests.RequestException as exc:
                error: errors.BridgeError = self._wire.transport_error(call, exc)
            else:
                try:
                    return self._wire.response(call, resp.status_code, resp.headers, resp.content)
                except errors.EndpointError as exc:
                    error = exc
            delay = self.retry_policy.next_delay(attempt, error, started, deadline)
            if delay is None:
                raise error
            log_retry(self.endpoint_id, call.route, attempt, error, delay)
            time.sleep(delay)

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
        call = self._wire.run(input, webhook, policy, s3_config, idempotency_key)
        body = self._send(call)
        # A repeated Idempotency-Key may name a job that already ended; /run's answer then
        # lacks the output, so only a non-terminal status is kept.
        return Job(self, str(body["id"]), None if terminal(body) else body)

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
        waiter = Waiter(timeout, self.poll_policy)
        if timeout is not None and timeout < 1:
            # runsync cannot hold for less than 1 s; submit and wait instead.
            job = self.run(input, webhook=webhook, policy=policy, s3_config=s3_config,
                           idempotency_key=idempotency_key)
            return job.output(waiter.remaining(), cancel_on_timeout=cancel_on_timeout)
        # The endpoint holds runsync up to the long-poll window, then we wait like output().
        hold = self.poll_policy.long_poll if self.poll_policy.long_poll > 0 else 90.0
        remaining = waiter.remaining()
        call = self._wire.runsync(input, hold if remaining is None else min(hold, remaining), webhook,
                                  policy, s3_config, idempotency_key)
        body = self._send(call, waiter.deadline)
        job = Job(self, str(body["id"]), body)
        if terminal(body):
            return job._outcome(body)
        return job._wait(waiter, cancel_on_timeout)

    def job(self, job_id: str) -> Job:
        """A :class:`Job` for a job id you already have (nothing is sent)."""
        return Job(self, job_id)

    def health(self, timeout: float = 3) -> dict[str, Any]:
        """``GET /health``: job counts and worker counts."""
        return self._send(self._wire.health(timeout))

    def purge_queue(self, timeout: float = 3) -> dict[str, Any]:
        """``POST /purge-queue``: remove every queued job (running ones keep running)."""
        return self._send(self._wire.purge_queue(timeout))

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

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
        return self._fetch(wait)

    def _fetch(self, wait: float | None, deadline: float | None = None) -> dict[str, Any]:
        ep = self.endpoint
        if wait is not None and wait > 0 and ep.long_poll is not False:
            try:
                body = ep._send(ep._wire.status(self.job_id, wait), deadline)
            except errors.EndpointError as exc:
                if not long_poll_unsupported(exc):
                    raise
                # NotFound here means the job is unknown; 200 means the route is.
                body = ep._send(ep._wire.status(self.job_id), deadline)
                ep.long_poll = False
            else:
                ep.long_poll = True
            return self._remember(body)
        return self._remember(ep._send(ep._wire.status(self.job_id), deadline))

    def status(self) -> str:
        """The job's status now (kept without asking again once terminal)."""
        final = self._final()
        if final is not None:
            return str(final["status"])
        return str(self.fetch()["status"])

    def output(self, timeout: float | None = None, *, cancel_on_timeout: bool = False) -> Any:
        """Wait until the job ends and return its output. FAILED, TIMED_OUT and CANCELLED
        raise JobFailed, JobTimedOut, JobCancelled; after ``timeout`` seconds
        :class:`bridge.errors.Timeout` (cancelling the job first if ``cancel_on_timeout``)."""
        final = self._final()
        if final is not None:
            return self._outcome(final)
        return self._wait(Waiter(timeout, self.endpoint.poll_policy), cancel_on_timeout)

    def _wait(self, waiter: Waiter, cancel_on_timeout: bool) -> Any:
        while True:
            wait = waiter.long_poll_wait() if self.endpoint.long_poll is not False else None
            before, started = self.last_status, now()
            body = self._fetch(wait, waiter.deadline)
            if terminal(body):
                return self._outcome(body)
            if waiter.expired():
                status = self.last_status
                note = self._cancel_quietly() if cancel_on_timeout else ""
                raise self._timeout(waiter, note, status)
            if self._should_pause(wait, now() - started, before, body):
                time.sleep(waiter.next_pause())

    def _cancel_quietly(self) -> str:
        try:
            self.cancel()
        except errors.BridgeError as exc:
            return f"; cancelling it failed: {exc.message}"
        return "; the job was cancelled"

    def stream(self, timeout: float | None = None) -> Iterator[Any]:
        """Yield chunk outputs as the job produces them (``GET /stream``). Ends on COMPLETED
        and CANCELLED; raises JobFailed/JobTimedOut after the last chunk."""
        ep = self.endpoint
        waiter = Waiter(timeout, ep.poll_policy, stream=True)
        seen = self.last_status
        while True:
            wait = waiter.long_poll_wait() if ep.long_poll is not False else None
            before, started = seen, now()
            body = ep._send(ep._wire.stream(self.job_id, wait), waiter.deadline)
            chunks = stream_chunks(body)
            seen = body.get("status")
            yield from chunks
            if stream_ended(body, chunks):
                if needs_error_text(body):
                    body = self.fetch()
                if body.get("status") in ("FAILED", "TIMED_OUT"):
                    self._outcome(body)
                return
            if chunks:
                waiter.reset()
                continue  # more may be waiting: read again at once
            if waiter.expired():
                raise self._timeout(waiter)
            if self._should_pause(wait, now() - started, before, body):
                time.sleep(waiter.next_pause())

    def cancel(self, timeout: float = 3) -> dict[str, Any]:
        """``POST /cancel``: stop the job (queued or running)."""
        body = self.endpoint._send(self.endpoint._wire.cancel(self.job_id, timeout))
        if body.get("status") == "CANCELLED":
            self._remember({"id": self.job_id, **body})
        return body

    def retry(self) -> dict[str, Any]:
        """``POST /retry``: requeue a FAILED or TIMED_OUT job under the same id."""
        body = self.endpoint._send(self.endpoint._wire.retry(self.job_id))
        self._forget()
        return body
