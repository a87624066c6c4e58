"""State and decisions shared by the sync and asyncio clients (no I/O here): settings and
policies of an endpoint, whether it offers the long poll, a job's last known status, and
what each status look means for a wait or a stream."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from typing import Any

from bridge import errors
from bridge.client._policy import PollPolicy, RetryPolicy, Waiter
from bridge.client._wire import Wire, terminal
from bridge.status import is_terminal

log = logging.getLogger("bridge.client")

#: Waits shorter than this are answered by the server straight away, so a long poll that
#: came back sooner with the same status means the server does not hold requests.
_EARLY = 0.5


class EndpointBase:
    """What both endpoint flavours hold: the wire, the policies, the long-poll verdict."""

    def __init__(
        self,
        endpoint_id: str,
        api_key: str | None,
        base_url: str | None,
        retry: RetryPolicy | None,
        poll: PollPolicy | None,
    ) -> None:
        self._wire = Wire(endpoint_id, api_key, base_url)
        self.endpoint_id = endpoint_id
        self.base_url = self._wire.base_url
        self.retry_policy = retry or RetryPolicy()
        self.poll_policy = poll or PollPolicy()
        #: None until known; False once the endpoint answered 404/405 on /status-sync.
        self.long_poll: bool | None = None if self.poll_policy.long_poll > 0 else False
        self._counter = itertools.count()
        self._sent = 0

    @property
    def requests_sent(self) -> int:
        """HTTP requests this endpoint object has sent, retries included."""
        return self._sent

    def _count(self) -> None:
        # next() on itertools.count is atomic under the GIL, unlike ``+= 1``.
        self._sent = next(self._counter) + 1

    def _new_job(self, job_id: str, body: Mapping[str, Any] | None = None) -> JobBase:
        """A job object of this endpoint's flavour."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint_id!r}, base_url={self.base_url!r})"


def long_poll_unsupported(exc: errors.EndpointError) -> bool:
    """A 404/405 on /status-sync may mean "no such route"; /status then tells which."""
    return exc.status_code in (404, 405)


class JobBase:
    """A job's identity and its last status body (kept once terminal, like the SDK)."""

    def __init__(self, endpoint: EndpointBase, job_id: str, body: Mapping[str, Any] | None = None) -> None:
        self._endpoint_base = endpoint
        self.job_id = str(job_id)
        self._last: dict[str, Any] | None = dict(body) if body else None

    @property
    def id(self) -> str:
        return self.job_id

    @property
    def endpoint_id(self) -> str:
        return self._endpoint_base.endpoint_id

    @property
    def last_status(self) -> str | None:
        """The status seen by the last look, without asking the endpoint."""
        return None if self._last is None else self._last.get("status")

    def _remember(self, body: dict[str, Any]) -> dict[str, Any]:
        self._last = body
        return body

    def _final(self) -> dict[str, Any] | None:
        return self._last if self._last is not None and terminal(self._last) else None

    def _forget(self) -> None:
        self._last = None

    def _outcome(self, body: Mapping[str, Any]) -> Any:
        return self._endpoint_base._wire.outcome(body, self.job_id)

    def _timeout(self, waiter: Waiter, note: str = "", status: str | None = None) -> errors.Timeout:
        return self._endpoint_base._wire.timeout_error(
            self.job_id, waiter.timeout, status or self.last_status, note
        )

    def _should_pause(self, wait: float | None, held: float, before: str | None, body: Mapping[str, Any]) -> bool:
        """After a non-terminal look: pause before the next one? Not after a long poll that
        was held, or that came back early because the status moved."""
        if wait is None or self._endpoint_base.long_poll is False:
            return True
        return held < min(wait, 1.0) * _EARLY and body.get("status") == before

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.job_id!r}, endpoint={self.endpoint_id!r}, status={self.last_status!r})"


def stream_chunks(body: Mapping[str, Any]) -> list[Any]:
    """The outputs of one /stream reply; a missing or null ``stream`` key means none."""
    chunks = body.get("stream") or []
    if not isinstance(chunks, list):
        return []
    return [c.get("output") if isinstance(c, Mapping) else c for c in chunks]


def stream_ended(body: Mapping[str, Any], chunks: list[Any]) -> bool:
    """The stream is over once the job is terminal and a read brought nothing new."""
    status = body.get("status")
    return isinstance(status, str) and is_terminal(status) and not chunks


def needs_error_text(body: Mapping[str, Any]) -> bool:
    return body.get("status") in ("FAILED", "TIMED_OUT") and body.get("error") is None


def now() -> float:
    return time.monotonic()


def log_retry(endpoint_id: str, route: str, attempt: int, error: BaseException, delay: float) -> None:
    """One debug line per retry (error texts are already scrubbed of keys)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s /%s attempt %d failed (%s); retrying in %.2f s", endpoint_id, route, attempt,
                  error, delay)
