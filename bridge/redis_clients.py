"""Redis clients that ride out a Redis restart or failover, and a helper that retries a whole
operation through an outage of up to ``BRIDGE_REDIS_OUTAGE`` seconds.

Two layers, because redis-py's own ``Retry`` counts attempts, not time:

- :func:`sync_client` / :func:`async_client` configure every connection with a short
  per-command ``Retry`` (3 retries, 0.1, 0.2 and 0.4 s apart: a blip under a second is
  invisible to the caller) on connection errors, timeouts and "loading the dataset", a ``health_check_interval``
  (a pooled connection idle that long is PINGed before use, so a stale one, left over from a
  Redis that restarted or failed over, is found and replaced instead of failing a command),
  and TCP keepalive tuned to notice a dead peer in about a minute (a blocked read on a
  vanished host ends instead of hanging).
- :func:`through_outage` / :func:`athrough_outage` retry the whole operation (a command, a
  pipeline, a Lua script: anything safe to run again) until it succeeds or
  ``BRIDGE_REDIS_OUTAGE`` seconds (default 300) have passed since its first failure, on
  the monotonic clock; backoff with jitter, capped at :data:`MAX_PAUSE`. The bound is time:
  no attempt starts after the deadline, so an operation gives up at most one attempt's
  duration past it (4 tries: under 1 s against a refused port, at most 4 x the 5 s connect
  timeout when packets vanish), then raises :class:`bridge.errors.RedisUnavailable`. One warning is logged per outage and URL (not
  per command, however many wait), and one line when Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from bridge.config import env_float
from bridge.errors import RedisUnavailable, scrub
from bridge.stream_hub import masked_url as masked

__all__ = [
    "DEFAULT_OUTAGE",
    "RETRY_ON",
    "async_client",
    "athrough_outage",
    "backend_retry_missing",
    "outage_seconds",
    "riding_async_client",
    "riding_sync_client",
    "sync_client",
    "through_outage",
]

T = TypeVar("T")
log = logging.getLogger("bridge.redis")

OUTAGE_ENV = "BRIDGE_REDIS_OUTAGE"
DEFAULT_OUTAGE = 300.0
#: Errors of an outage: retried. (BusyLoadingError: a restarted Redis loading its data.)
RETRY_ON: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, BusyLoadingError)
#: ConnectionError subclasses a wait does not cure: a wrong password stays wrong.
NEVER_RETRY: tuple[type[Exception], ...] = (AuthenticationError, AuthorizationError)
#: Longest pause between two attempts of a whole operation, s.
MAX_PAUSE = 2.0
#: A failure this soon after a recovery continues the same outage (no second warning), s.
FLAP_WINDOW = 5.0
#: Idle seconds after which a pooled connection is PINGed before it is used.
HEALTH_CHECK_INTERVAL = 10

# Linux keepalive: first probe after 30 s idle, then every 10 s, dead after 3 misses.
_KEEPALIVE = {
    opt: value
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    if (opt := getattr(socket, name, None)) is not None
}


def outage_seconds() -> float:
    """``BRIDGE_REDIS_OUTAGE``: how long bridge retries an operation through a Redis outage, s
    (default 300). The one place the variable is read."""
    return env_float(OUTAGE_ENV, DEFAULT_OUTAGE)


def _connection_options(socket_timeout: float | None, retry_class: type[Any] = Retry) -> dict[str, Any]:
    return {
        "retry": retry_class(ExponentialBackoff(cap=0.4, base=0.05), retries=3),
        "retry_on_error": list(RETRY_ON),
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "socket_keepalive": True,
        "socket_keepalive_options": dict(_KEEPALIVE),
        "socket_connect_timeout": 5.0,
        "socket_timeout": socket_timeout,
    }


def sync_client(url: str, *, socket_timeout: float | None = None, **kwargs: Any) -> redis.Redis:
    """A ``redis.Redis`` for ``url`` that survives restarts and failovers (see the module).

    ``socket_timeout`` stays unset by default so blocking commands (``XREAD BLOCK``,
    ``BLPOP``) work; keepalive still ends reads on a dead peer. ``kwargs`` go to
    ``Redis.from_url`` (e.g. ``decode_responses=True``)."""
    return redis.Redis.from_url(url, **{**_connection_options(socket_timeout), **kwargs})


def async_client(
    url: str, max_connections: int | None = None, *, socket_timeout: float | None = None,
    pool_timeout: float = 30.0, **kwargs: Any,
) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` for ``url`` that survives restarts and failovers.

    With ``max_connections``, the pool blocks (up to ``pool_timeout`` s) for a free
    connection instead of failing, as the gateway's does; the client owns the pool and
    closes it with ``aclose()``."""
    options = {**_connection_options(socket_timeout, AsyncRetry), **kwargs}
    if max_connections is None:
        return aioredis.Redis.from_url(url, **options)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout, **options
    )
    return aioredis.Redis.from_pool(pool)


class _Outages:
    """Per URL: when the current outage began, so it is logged once, not per command. A
    failure within :data:`FLAP_WINDOW` s of a recovery continues that outage (a command that
    failed just before Redis came back, or a flapping Redis, logs no second warning)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}
        self._recovered: dict[str, tuple[float, float]] = {}  # url -> (outage start, recovery)

    def failed(self, url: str, exc: BaseException, outage: float) -> None:
        now = time.monotonic()
        with self._lock:
            if url in self._since:
                return
            since, recovered_at = self._recovered.pop(url, (now, -FLAP_WINDOW))
            self._since[url] = since
            if now - recovered_at < FLAP_WINDOW:
                return
        log.warning("Redis at %s is unreachable (%s); bridge retries for up to %.0f s (%s)",
                    masked(url), _describe(exc, url), outage, OUTAGE_ENV)

    def succeeded(self, url: str) -> None:
        if url not in self._since:  # the common case: no lock
            return
        now = time.monotonic()
        with self._lock:
            since = self._since.pop(url, None)
            if since is None:
                return
            self._recovered[url] = (since, now)
        log.warning("Redis at %s answers again after %.1f s", masked(url), now - since)


_outages = _Outages()


def _describe(exc: BaseException, url: str) -> str:
    password = redis.connection.parse_url(url).get("password")
    return scrub(f"{type(exc).__name__}: {exc}", password)


def _unavailable(url: str, outage: float, exc: BaseException) -> RedisUnavailable:
    return RedisUnavailable(
        f"Redis at {masked(url)} stayed unreachable for {outage:g} s ({_describe(exc, url)})",
        None, None, None, masked(url), outage,
    )


class _Attempts:
    """The deadline and backoff of one operation, shared by the sync and async loops."""

    def __init__(self, url: str, outage: float | None) -> None:
        self.url = url
        self.outage = outage_seconds() if outage is None else outage
        self.deadline: float | None = None
        self.failures = 0
        self.backoff = ExponentialWithJitterBackoff(cap=MAX_PAUSE, base=0.05)

    def pause_after(self, exc: BaseException) -> float:
        """Seconds to wait before the next attempt; raises when the outage budget is spent."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.outage
        _outages.failed(self.url, exc, self.outage)
        if now >= self.deadline:
            raise _unavailable(self.url, self.outage, exc) from exc
        self.failures += 1
        return min(self.backoff.compute(self.failures), self.deadline - now)


def through_outage(op: Callable[[], T], url: str, *, outage: float | None = None) -> T:
    """Run ``op()`` (Redis commands against ``url``), retrying it through an outage of up
    to ``outage`` s (default ``BRIDGE_REDIS_OUTAGE``); then :class:`RedisUnavailable`.

    ``op`` must be safe to run again (it may have reached Redis before the connection
    broke). Errors other than an outage's (a ``ResponseError``, a wrong password) are
    raised at once."""
    attempts = None  # made on the first failure: the common case costs one call
    while True:
        try:
            result = op()
        except RETRY_ON as exc:
            if isinstance(exc, NEVER_RETRY):
                raise
            attempts = attempts or _Attempts(url, outage)
            time.sleep(attempts.pause_after(exc))  # backoff between attempts, bounded by the deadline
            continue
        _outages.succeeded(url)
        return result


async def athrough_outage(
    op: Callable[[], Awaitable[T]], url: str, *, outage: float | None = None
) -> T:
    """The asyncio twin of :func:`through_outage`: ``op`` makes a new awaitable per attempt
    (e.g. ``lambda: client.get(key)``)."""
    attempts = None  # made on the first failure: the common case costs one await
    while True:
        try:
            result = await op()
        except RETRY_ON as exc:
            if isinstance(exc, NEVER_RETRY):
                raise
            attempts = attempts or _Attempts(url, outage)
            await asyncio.sleep(attempts.pause_after(exc))
            continue
        _outages.succeeded(url)
        return result


class _RidingRedis(redis.Redis):
    """A sync client whose every command rides an outage (:func:`through_outage`)."""

    outage_url = ""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        run = super().execute_command
        return through_outage(lambda: run(*args, **options), self.outage_url)


class _RidingAsyncRedis(aioredis.Redis):
    """An asyncio client whose every command rides an outage (:func:`athrough_outage`)."""

    outage_url = ""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        run = super().execute_command
        return await athrough_outage(lambda: run(*args, **options), self.outage_url)


def riding_sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """:func:`sync_client` whose every command (scripts included: they run as commands) is
    retried through an outage of up to ``BRIDGE_REDIS_OUTAGE`` s. Pipelines are not: wrap
    their ``execute`` in :func:`through_outage`. Only for commands safe to repeat."""
    options = {**_connection_options(kwargs.pop("socket_timeout", None)), **kwargs}
    client = _RidingRedis(connection_pool=redis.ConnectionPool.from_url(url, **options))
    client.auto_close_connection_pool = True  # it owns the pool, as a client from_url does
    client.outage_url = url
    return client


def riding_async_client(url: str, max_connections: int | None = None, **kwargs: Any) -> aioredis.Redis:
    """:func:`async_client` whose every command rides an outage (see :func:`riding_sync_client`)."""
    client = _RidingAsyncRedis(connection_pool=async_client(url, max_connections, **kwargs).connection_pool)
    client.auto_close_connection_pool = True  # it owns the pool, as a client from_url does
    client.outage_url = url
    return client


def backend_retry_missing(conf: Any) -> list[str]:
    """The result-backend retry settings a Celery app's ``conf`` lacks (``bridge.install``
    warns about them): without ``result_backend_always_retry`` a Redis blip while a task
    stores its result fails the task although its remote job completed."""
    return [] if conf.get("result_backend_always_retry") else ["result_backend_always_retry"]
