"""``metrics``: Prometheus counters and histograms per endpoint and outcome.

Metrics (``namespace`` option, default ``bridge``):

==================================  ==================  =====================================
name                                labels              what
==================================  ==================  =====================================
``bridge_jobs_submitted_total``     endpoint            remote jobs accepted by the endpoint
``bridge_jobs_total``               endpoint, outcome   finished tasks: completed, failed,
                                                        timed_out, rejected, cancelled, cached
``bridge_job_queue_seconds``        endpoint            endpoint-reported queue delay
``bridge_job_execution_seconds``    endpoint            endpoint-reported execution time
``bridge_job_duration_seconds``     endpoint, outcome   wall time from the job's start to its end
``bridge_retries_total``            endpoint            retries (requests or the task)
``bridge_cancels_total``            endpoint            cancelled jobs
``bridge_cache_hits_total``         endpoint            jobs answered by ``bridge_lookup``
``bridge_rate_limited_total``       endpoint, route     429 answers bridge retried
==================================  ==================  =====================================

Options: ``enabled`` (turn on without a port), ``port`` (serve ``/metrics`` on
``addr``:``port``, ``addr`` default ``127.0.0.1``), ``namespace``, ``endpoints``.

Prefork: set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory) in the worker's environment
*before it starts*; each child then writes its own files and the port serves the sum via
``prometheus_client.multiprocess.MultiProcessCollector``. The server is started where the
plugin is loaded: in the worker's main process before the pool forks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from bridge import hookimpl
from bridge.errors import ConfigurationError, JobCancelled, JobRejected, JobTimedOut

from ._options import endpoint_filter

__all__ = ["MetricsPlugin", "exposition_registry"]

_STARTED_PORTS: set[tuple[str, int]] = set()
_PORT_LOCK = threading.Lock()


def exposition_registry(own: Any) -> Any:
    """The registry to serve: the multiprocess sum under ``PROMETHEUS_MULTIPROC_DIR``, else ``own``."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return own
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class MetricsPlugin:
    """The registered plugin object; see the module docstring for options."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, values

        multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if multiproc_dir and values.ValueClass.__name__ != "MmapedValue":
            raise ConfigurationError(
                "plugin 'metrics': PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported",
                None, None, "set PROMETHEUS_MULTIPROC_DIR in the environment before the process starts",
            )
        if multiproc_dir and not os.path.isdir(multiproc_dir):
            raise ConfigurationError(
                f"plugin 'metrics': PROMETHEUS_MULTIPROC_DIR={multiproc_dir} is not a directory",
                None, None, "create it (empty) before starting the worker",
            )
        ns = str(options.get("namespace", "bridge"))
        self.endpoints = endpoint_filter(options)
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.submitted = Counter(f"{ns}_jobs_submitted", "Remote jobs accepted", ["endpoint"], registry=reg)
        self.jobs = Counter(f"{ns}_jobs", "Finished tasks by outcome", ["endpoint", "outcome"], registry=reg)
        self.queue = Histogram(f"{ns}_job_queue_seconds", "Endpoint-reported queue delay", ["endpoint"], registry=reg)
        self.execution = Histogram(
            f"{ns}_job_execution_seconds", "Endpoint-reported execution time", ["endpoint"], registry=reg
        )
        self.duration = Histogram(
            f"{ns}_job_duration_seconds", "Wall time from submit to end", ["endpoint", "outcome"], registry=reg
        )
        self.retries = Counter(f"{ns}_retries", "Retries", ["endpoint"], registry=reg)
        self.cancels = Counter(f"{ns}_cancels", "Cancelled jobs", ["endpoint"], registry=reg)
        self.cache_hits = Counter(f"{ns}_cache_hits", "Jobs answered by a lookup", ["endpoint"], registry=reg)
        self.rate_limited = Counter(f"{ns}_rate_limited", "Rate-limited requests", ["endpoint", "route"], registry=reg)
        self.port: int | None = None
        if options.get("port") not in (None, ""):
            self.port = int(options["port"])
            self._serve(str(options.get("addr", "127.0.0.1")), self.port)

    def _serve(self, addr: str, port: int) -> None:
        from prometheus_client import start_http_server

        with _PORT_LOCK:
            if (addr, port) in _STARTED_PORTS:
                return  # one server per process; a rebuilt Hooks reuses it
            try:
                start_http_server(port, addr=addr, registry=exposition_registry(self.registry))
            except OSError as exc:
                raise ConfigurationError(
                    f"plugin 'metrics' cannot listen on {addr}:{port}: {exc}", None, None,
                    "BRIDGE_PLUGIN_METRICS_PORT (a free port; 0 is not allowed)",
                ) from exc
            _STARTED_PORTS.add((addr, port))

    def _skip(self, ctx: Any) -> bool:
        return self.endpoints is not None and ctx.endpoint_id not in self.endpoints

    def _finish(self, ctx: Any, outcome: str, delay_ms: Any = None, execution_ms: Any = None) -> None:
        endpoint = ctx.endpoint_id
        self.jobs.labels(endpoint, outcome).inc()
        if isinstance(delay_ms, (int, float)):
            self.queue.labels(endpoint).observe(delay_ms / 1000.0)
        if isinstance(execution_ms, (int, float)):
            self.execution.labels(endpoint).observe(execution_ms / 1000.0)
        # ctx.started: when the gateway began this job (input hooks, submit, wait, output)
        self.duration.labels(endpoint, outcome).observe(time.monotonic() - ctx.started)

    @hookimpl
    def bridge_on_submitted(self, ctx: Any) -> None:
        if self._skip(ctx):
            return
        self.submitted.labels(ctx.endpoint_id).inc()

    @hookimpl
    def bridge_on_completed(self, ctx: Any, delay_ms: Any, execution_ms: Any) -> None:
        if self._skip(ctx):
            return
        if ctx.meta.get("cache") == "hit":
            self.cache_hits.labels(ctx.endpoint_id).inc()
            self._finish(ctx, "cached")
        else:
            self._finish(ctx, "completed", delay_ms, execution_ms)

    @hookimpl
    def bridge_on_failed(self, ctx: Any, error: Any, delay_ms: Any, execution_ms: Any) -> None:
        if self._skip(ctx):
            return
        if isinstance(error, JobRejected):
            outcome = "rejected"
        elif isinstance(error, JobTimedOut):
            outcome = "timed_out"
        elif isinstance(error, JobCancelled):
            outcome = "cancelled"
        else:
            outcome = "failed"
        self._finish(ctx, outcome, delay_ms, execution_ms)

    @hookimpl
    def bridge_on_cancelled(self, ctx: Any) -> None:
        if self._skip(ctx):
            return
        self.cancels.labels(ctx.endpoint_id).inc()
        self._finish(ctx, "cancelled")

    @hookimpl
    def bridge_on_retried(self, ctx: Any) -> None:
        if not self._skip(ctx):
            self.retries.labels(ctx.endpoint_id).inc()

    @hookimpl
    def bridge_on_rate_limited(self, ctx: Any, route: Any) -> None:
        if not self._skip(ctx):
            self.rate_limited.labels(ctx.endpoint_id, route or "unknown").inc()
