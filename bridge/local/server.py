"""The local endpoint server: several endpoints (each a job store plus a runner) behind one
aiohttp application, with shared faults, request statistics and webhook delivery.

Use it from asyncio code (``await LocalServer(...).start()``), from synchronous code and
tests through :class:`bridge.testing.LocalEndpoint` (a background thread), or from the
command line with ``bridge serve``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from typing import Any

from aiohttp import web

from bridge.local import bodies, policies
from bridge.local.faults import Faults
from bridge.local.jobs import JobStore
from bridge.local.loading import Handler, load_handler
from bridge.local.routes import Routes, json_errors
from bridge.local.runner import HandlerRunner
from bridge.local.webhooks import WebhookSender

log = logging.getLogger(__name__)


class ServedEndpoint:
    """One endpoint: its options, its job store and the runner executing its jobs."""

    def __init__(self, endpoint_id: str, options: policies.EndpointOptions, store: JobStore,
                 runner: HandlerRunner | Any | None) -> None:
        # runner: a HandlerRunner, a worker_procs.WorkerRunner (real runpod workers), or
        # None when something outside the server drives the store.
        self.endpoint_id = endpoint_id
        self.options = options
        self.store = store
        self.runner = runner

    def health(self) -> dict[str, Any]:
        counters = self.store.counters
        jobs = {
            "completed": counters.completed,
            "failed": counters.failed,
            "inProgress": self.store.in_progress,
            "inQueue": self.store.in_queue,
            "retried": counters.retried,
        }
        worker_counts = getattr(self.runner, "worker_counts", None)
        if worker_counts is not None:  # real worker processes report their own states
            return {"jobs": jobs, "workers": dict(worker_counts())}
        workers = self.options.workers
        running = self.store.in_progress
        initializing = 1 if self.runner is not None and self.runner.initializing else 0
        idle = max(0, workers - running - initializing)
        return {
            "jobs": jobs,
            "workers": {
                "idle": idle,
                "running": min(running, workers),
                "initializing": initializing,
                "ready": idle,
                "throttled": 0,
                "unhealthy": 0,
            },
        }

    def describe(self) -> dict[str, Any]:
        return {
            "options": asdict(self.options),
            "handler_kind": getattr(self.runner, "kind", None),
            "submissions": self.store.counters.submitted,
        }


class LocalServer:
    """RunPod's endpoint API over in-process handlers. Methods run on the server's loop.

    ``header_timeout``: seconds a connection may take to deliver a complete request head,
    counted from its opening or from its previous answer; past it the connection is closed
    (this is also how long an idle keep-alive connection is kept). ``body_timeout``:
    seconds a request body may take once its head has arrived; past it the answer is 408
    and the connection is closed. ``long_poll=False``: a RunPod-style server without
    ``/status-sync`` (the SDK's own and self-hosted ones): that route answers 404 exactly as
    an unknown route does, so clients poll ``/status``; may be changed while serving.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        profile: str | None = None,
        faults: dict[str, Any] | None = None,
        webhook_retries: int = 2,
        webhook_retry_delay: float = 10.0,
        header_timeout: float = bodies.HEADER_TIMEOUT,
        body_timeout: float = bodies.BODY_TIMEOUT,
        long_poll: bool = True,
    ) -> None:
        if header_timeout <= 0 or body_timeout <= 0:
            raise ValueError("header_timeout and body_timeout must be positive seconds")
        self.host = host
        self.port = port
        self.api_key = api_key
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)
        #: False: /status-sync is not served (404 as for an unknown route); read per request.
        self.long_poll = bool(long_poll)
        self.profile = policies.check_profile(profile)
        self.faults = Faults.for_profile(self.profile)
        if faults:
            self.faults.update(**faults)
        self.endpoints: dict[str, ServedEndpoint] = {}
        self.webhooks = WebhookSender(retries=webhook_retries, delay=webhook_retry_delay)
        self._counts: dict[str, Counter[str]] = {}
        self._runner: web.AppRunner | None = None
        #: endpoint id -> worker_api.WorkerHost, for endpoints run by real worker processes
        self._worker_hosts: dict[str, Any] = {}

    # -- endpoints -------------------------------------------------------------------------

    def add_endpoint(
        self,
        endpoint_id: str,
        handler: Handler | str | None = None,
        *,
        runner: bool = True,
        worker_command: str | list[str] | None = None,
        worker_count: int = 1,
        worker_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> ServedEndpoint:
        """Serve ``endpoint_id`` with ``handler`` (callable, spec string, or None for echo).

        ``options`` are :class:`~bridge.local.policies.EndpointOptions` fields. With
        ``worker_command`` the jobs run in ``worker_count`` real runpod worker processes
        instead (``bridge.local.worker_procs``; ``worker_options`` go to its WorkerRunner).
        With ``runner=False`` nothing runs the jobs: an external runner takes them from the
        store (see ``bridge.local.jobs``). Must be called on the server's loop.
        """
        if endpoint_id in self.endpoints:
            raise ValueError(f"endpoint {endpoint_id!r} is already served")
        if worker_command is not None and handler is not None:
            raise ValueError("give a handler or a worker_command, not both")
        opts = policies.EndpointOptions(**options)
        store = JobStore(endpoint_id)
        store.terminal_listeners.append(self.webhooks.job_finished)
        job_runner: Any = None
        if worker_command is not None:
            from bridge.local.worker_procs import WorkerRunner

            job_runner = WorkerRunner(store, worker_command, count=worker_count, **(worker_options or {}))
            self._worker_hosts[endpoint_id] = job_runner.host
            if self._runner is not None:  # already serving: workers can connect now
                job_runner.start(self.base_url)
        elif runner:
            job_runner = HandlerRunner(
                store, load_handler(handler), workers=opts.workers,
                return_aggregate_stream=opts.return_aggregate_stream, cold_start=lambda: self.faults.cold_start,
            )
            job_runner.start()
        served = ServedEndpoint(endpoint_id, opts, store, job_runner)
        self.endpoints[endpoint_id] = served
        return served

    # -- lifecycle -------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        from bridge.local.worker_api import add_worker_routes

        app = web.Application(middlewares=[json_errors])
        Routes(self).install(app)
        add_worker_routes(app, self._worker_hosts)
        return app

    async def start(self) -> str:
        """Bind and serve; returns the base URL (``http://host:port/v2``)."""
        # A rejected oversized upload is read and dropped for lingering_time (10 s by
        # default), which would also hold shutdown that long; long polls end on close.
        # aiohttp's keep-alive timer runs from a connection's opening and from each answer
        # until a complete request head arrives, and closes the connection when it fires:
        # that is the header timeout (a half-sent head no longer holds a connection forever).
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False,
                                     lingering_time=1.0, shutdown_timeout=2.0,
                                     keepalive_timeout=self.header_timeout)
        await self._runner.setup()
        # aiohttp's default backlog of 128 overflowed with 2,000 clients connecting at once.
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, backlog=4096)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        for ep in self.endpoints.values():
            worker_runner: Any = ep.runner
            if ep.endpoint_id in self._worker_hosts and not worker_runner.started:
                worker_runner.start(self.base_url)
        return self.base_url

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v2"

    async def stop(self) -> None:
        for ep in self.endpoints.values():
            ep.store.close()
            if ep.runner is not None:
                await ep.runner.close()
        await self.webhooks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- faults and introspection ----------------------------------------------------------

    def set_faults(self, **settings: Any) -> None:
        """Change fault settings at runtime (see ``bridge.local.faults``); 'profile' too."""
        profile = settings.pop("profile", None)
        if profile is not None:
            self.profile = policies.check_profile(profile)
            settings.setdefault("rate_limits", "runpod" if self.profile == "runpod" else None)
        self.faults.update(**settings)
        if "cold_start" in settings:
            for ep in self.endpoints.values():
                if ep.runner is not None:
                    ep.runner.warm = False

    def count(self, endpoint_id: str, route: str) -> None:
        """One request to a served endpoint (routes call it after the key and endpoint checks)."""
        self._counts.setdefault(endpoint_id, Counter())[route] += 1

    def stats(self, endpoint_id: str) -> dict[str, int]:
        return dict(self._counts.get(endpoint_id, {}))

    def all_stats(self) -> dict[str, Any]:
        return {
            "requests": {ep: dict(c) for ep, c in self._counts.items()},
            "submissions": {ep_id: ep.store.counters.submitted for ep_id, ep in self.endpoints.items()},
            "webhooks": {"delivered": self.webhooks.delivered, "failed": self.webhooks.failed},
        }

    def reset_stats(self) -> None:
        self._counts.clear()

    def job_state(self, job_id: str) -> dict[str, Any] | None:
        for ep in self.endpoints.values():
            job = ep.store.get(job_id)
            if job is not None:
                return {"endpoint_id": ep.endpoint_id, **job.describe()}
        return None
