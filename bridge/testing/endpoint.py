"""``LocalEndpoint``: the local endpoint server in a background thread, for tests and scripts.

::

    from bridge.testing import LocalEndpoint

    with LocalEndpoint(lambda job: job["input"], endpoint_id="echo") as ep:
        endpoint = bridge.Endpoint("echo", base_url=ep.base_url)
        ...
        assert ep.stats()["run"] == 1

The server runs its own event loop in a daemon thread and is serving when the
constructor returns. Every method here is thread-safe (it runs on the server's loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bridge.local.bodies import BODY_TIMEOUT, HEADER_TIMEOUT
from bridge.local.loading import Handler
from bridge.local.server import LocalServer, ServedEndpoint

T = TypeVar("T")
_CALL_TIMEOUT = 30.0


class LocalEndpoint:
    """A running local endpoint serving ``handler`` as ``endpoint_id`` (more via :meth:`add_endpoint`).

    ``handler`` is a callable (plain, async, generator or async generator), a spec string
    (``path/to/file.py:function`` or ``package.module:function``) or None (echo the input).
    Extra keyword ``options`` are endpoint options: ``retention``, ``sync_retention``,
    ``execution_timeout``, ``ttl``, ``runsync_wait`` (seconds), ``max_run_bytes``,
    ``max_runsync_bytes``. ``faults`` is a dict of fault settings (see ``set_faults``).
    ``header_timeout`` / ``body_timeout`` (seconds) bound how long a request head / body may
    take to arrive (see :class:`~bridge.local.server.LocalServer`). ``long_poll=False``
    serves no ``/status-sync`` (404 as for an unknown route), like a RunPod-style server
    without long polls; :meth:`set_long_poll` changes it while serving.
    """

    def __init__(
        self,
        handler: Handler | str | None = None,
        *,
        endpoint_id: str = "test",
        return_aggregate_stream: bool = False,
        workers: int = 64,
        api_key: str | None = None,
        profile: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: dict[str, Any] | None = None,
        webhook_retries: int = 2,
        webhook_retry_delay: float = 10.0,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        long_poll: bool = True,
        **options: Any,
    ) -> None:
        self.endpoint_id = endpoint_id
        self._server = LocalServer(
            host=host, port=port, api_key=api_key, profile=profile, faults=faults,
            webhook_retries=webhook_retries, webhook_retry_delay=webhook_retry_delay,
            header_timeout=header_timeout, body_timeout=body_timeout, long_poll=long_poll,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bridge-local-endpoint", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._run(self._server.start())
            self.add_endpoint(endpoint_id, handler, return_aggregate_stream=return_aggregate_stream,
                              workers=workers, **options)
        except BaseException:
            self.close()
            raise

    # -- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v2``: pass to ``Endpoint(base_url=...)`` or RUNPOD_ENDPOINT_BASE_URL."""
        return self._server.base_url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def server(self) -> LocalServer:
        """The server object (use its methods only through this class's, which are thread-safe)."""
        return self._server

    def url(self, op: str, job_id: str | None = None, *, endpoint_id: str | None = None) -> str:
        """Full URL of a route, e.g. ``url("status", job_id)``."""
        url = f"{self.base_url}/{endpoint_id or self.endpoint_id}/{op}"
        return f"{url}/{job_id}" if job_id else url

    # -- endpoints -------------------------------------------------------------------------

    def add_endpoint(self, endpoint_id: str, handler: Handler | str | None = None, **options: Any) -> None:
        """Serve another endpoint on the same server (options as for the constructor).

        ``runner=False`` serves the endpoint without executing its jobs: drive its job store
        (``endpoint(id).store``, see ``bridge.local.jobs``) from :meth:`run_in_loop`.
        """
        self._call(lambda: self._server.add_endpoint(endpoint_id, handler, **options))

    def endpoint(self, endpoint_id: str | None = None) -> ServedEndpoint:
        return self._server.endpoints[endpoint_id or self.endpoint_id]

    # -- introspection and faults (the same as the /_bridge/ routes) -----------------------

    def stats(self, endpoint_id: str | None = None) -> dict[str, int]:
        """Requests received per route (``run``, ``status``, ``status-sync``, ...) for one endpoint."""
        return self._call(lambda: self._server.stats(endpoint_id or self.endpoint_id))

    def all_stats(self) -> dict[str, Any]:
        return self._call(self._server.all_stats)

    def reset_stats(self) -> None:
        self._call(self._server.reset_stats)

    def submissions(self, endpoint_id: str | None = None) -> int:
        """How many jobs were created (an idempotent repeat of /run creates none)."""
        return self._call(lambda: self.endpoint(endpoint_id).store.counters.submitted)

    def job_state(self, job_id: str) -> dict[str, Any] | None:
        """Everything known about a job (status body plus input, policy, chunks, webhook attempts)."""
        return self._call(lambda: self._server.job_state(job_id))

    def health(self, endpoint_id: str | None = None) -> dict[str, Any]:
        return self._call(lambda: self.endpoint(endpoint_id).health())

    def set_faults(self, **settings: Any) -> None:
        """rate_limits, error_rate, error_status, latency, cold_start, seed, status_override, profile."""
        self._call(lambda: self._server.set_faults(**settings))

    def set_long_poll(self, on: bool) -> None:
        """Serve /status-sync (True) or answer it 404 as an unknown route (False)."""
        self._call(lambda: setattr(self._server, "long_poll", bool(on)))

    def faults(self) -> dict[str, Any]:
        return self._call(self._server.faults.describe)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._loop.is_running():
                self._run(self._server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    stop = close

    def __enter__(self) -> LocalEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalEndpoint({self.endpoint_id!r}, base_url={self.base_url!r})"

    def run_in_loop(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the server's loop (e.g. a custom runner using the job-store API)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT)

    def _call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self._run(call())
