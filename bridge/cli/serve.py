"""``bridge serve``: run the local endpoint (RunPod's endpoint API on 127.0.0.1) in the foreground.

::

    bridge serve examples/handlers.py:echo -e echo --port 8000
    bridge serve --endpoint echo=examples/handlers.py:echo --endpoint tokens=examples/handlers.py:stream_tokens
    bridge serve --worker-command "python examples/runpod_worker/handler.py" --worker-count 2 -e workers

Prints the base URL (``http://127.0.0.1:PORT/v2``) on its first line of output, then serves
until SIGINT or SIGTERM, a normal stop (exit 0). A handler that cannot be loaded, a port
that cannot be bound, or a ``--worker-command`` whose workers keep dying before they reach
the endpoint (see :mod:`bridge.local.worker_procs`) exits 7 with one line on stderr.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from bridge import errors
from bridge.cli._common import EXIT_INVALID
from bridge.local.bodies import BODY_TIMEOUT, HEADER_TIMEOUT
from bridge.local.faults import ROUTES
from bridge.local.policies import PROFILES


def _parse_rate_limit(value: str) -> tuple[str, tuple[float, float]]:
    # ROUTE=N/SECONDS, e.g. run=100/10
    route, sep, spec = value.partition("=")
    count, _, seconds = spec.partition("/")
    if not sep or route not in ROUTES:
        raise click.BadParameter(f"{value!r}: expected ROUTE=N/SECONDS with ROUTE one of {', '.join(ROUTES)}")
    try:
        return route, (float(count), float(seconds or 1))
    except ValueError:
        raise click.BadParameter(f"{value!r}: N and SECONDS must be numbers") from None


def _parse_error_rate(value: str) -> tuple[str, float]:
    # [ROUTE=]P, e.g. 0.1 or status=0.5
    route, sep, rate = value.rpartition("=")
    try:
        return (route if sep else "*"), float(rate)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected [ROUTE=]PROBABILITY") from None


@click.command("serve")
@click.argument("handler", required=False)
@click.option("--endpoint-id", "-e", "endpoint_id", default="local", show_default=True,
              help="Endpoint id HANDLER is served as (/v2/ID/...).")
@click.option("--endpoint", "extra_endpoints", multiple=True, metavar="ID=HANDLER",
              help="Serve another endpoint too (repeatable); HANDLER may then be omitted.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", "-p", default=8000, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--api-key", envvar="BRIDGE_SERVE_API_KEY", default=None,
              help="Require this key (Bearer or raw Authorization header); env BRIDGE_SERVE_API_KEY.")
@click.option("--workers", "-w", default=64, show_default=True, type=click.IntRange(min=1),
              help="Jobs that run at once, per endpoint.")
@click.option("--return-aggregate-stream", is_flag=True, help="Generator handlers' output is every yielded chunk.")
@click.option("--profile", type=click.Choice(PROFILES), default="local", show_default=True,
              help="'runpod': RunPod's rate limits and policy minimums (executionTimeout 5 s, ttl 10 s).")
@click.option("--retention", type=float, default=1800.0, show_default=True, help="Seconds /run results stay readable.")
@click.option("--sync-retention", type=float, default=60.0, show_default=True, help="Seconds /runsync results stay readable.")
@click.option("--execution-timeout", type=float, default=600.0, show_default=True,
              help="Default policy.executionTimeout, seconds.")
@click.option("--rate-limit", "rate_limits", multiple=True, metavar="ROUTE=N/SECONDS",
              help="Token-bucket limit for a route (repeatable), e.g. run=1000/10; over it → 429.")
@click.option("--error-rate", "error_rates", multiple=True, metavar="[ROUTE=]P",
              help="Answer 500 to this fraction of requests (to one route, or all).")
@click.option("--latency", type=float, default=0.0, help="Seconds added to every request.")
@click.option("--cold-start", type=float, default=0.0, help="Seconds the first job waits for a worker to boot.")
@click.option("--webhook-retry-delay", type=float, default=10.0, show_default=True,
              help="Seconds between webhook attempts (3 attempts in all).")
@click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), default=HEADER_TIMEOUT,
              show_default=True, help="Seconds a connection may take to send a complete request head "
                                      "(from its opening or its previous answer; also the idle keep-alive).")
@click.option("--body-timeout", type=click.FloatRange(min=0, min_open=True), default=BODY_TIMEOUT,
              show_default=True, help="Seconds a request body may take after its head; then 408.")
@click.option("--long-poll/--no-long-poll", "long_poll", default=True, show_default=True,
              help="--no-long-poll: serve no /status-sync (404 as for an unknown route), like a "
                   "RunPod-style server without long polls; clients poll /status.")
@click.option("--worker-command", default=None, metavar="CMD",
              help="Run the endpoint's jobs in real runpod worker processes started with CMD "
                   "(e.g. \"python handler.py\"), instead of a HANDLER.")
@click.option("--worker-count", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes for --worker-command.")
def serve(
    handler: str | None,
    endpoint_id: str,
    extra_endpoints: tuple[str, ...],
    host: str,
    port: int,
    api_key: str | None,
    workers: int,
    return_aggregate_stream: bool,
    profile: str,
    retention: float,
    sync_retention: float,
    execution_timeout: float,
    rate_limits: tuple[str, ...],
    error_rates: tuple[str, ...],
    latency: float,
    cold_start: float,
    webhook_retry_delay: float,
    header_timeout: float,
    body_timeout: float,
    long_poll: bool,
    worker_command: str | None,
    worker_count: int,
) -> None:
    """Serve HANDLER (path/to/file.py:function or package.module:function) as a RunPod-style endpoint."""
    # (endpoint id, handler spec, None) or (endpoint id, None, worker command)
    endpoints: list[tuple[str, str | None, str | None]] = []
    if worker_command is not None and handler is not None:
        raise click.UsageError("give either HANDLER or --worker-command, not both")
    if handler is not None or worker_command is not None:
        endpoints.append((endpoint_id, handler, worker_command))
    for item in extra_endpoints:
        ep_id, sep, spec = item.partition("=")
        if not sep or not ep_id or not spec:
            raise click.BadParameter(f"{item!r}: expected ID=HANDLER", param_hint="--endpoint")
        endpoints.append((ep_id, spec, None))
    if not endpoints:
        raise click.UsageError("give a HANDLER, --worker-command CMD, or --endpoint ID=HANDLER")
    faults: dict[str, Any] = {"latency": latency, "cold_start": cold_start}
    if rate_limits:
        limits = dict(_parse_rate_limit(v) for v in rate_limits)
        if profile == "runpod":
            from bridge.local.faults import RUNPOD_LIMITS

            limits = {**RUNPOD_LIMITS, **limits}
        faults["rate_limits"] = limits
    if error_rates:
        faults["error_rate"] = dict(_parse_error_rate(v) for v in error_rates)
    server_options = {"webhook_retry_delay": webhook_retry_delay, "header_timeout": header_timeout,
                      "body_timeout": body_timeout, "long_poll": long_poll}
    options = {
        "workers": workers, "return_aggregate_stream": return_aggregate_stream, "retention": retention,
        "sync_retention": sync_retention, "execution_timeout": execution_timeout,
    }
    try:
        asyncio.run(_serve(endpoints, host, port, api_key, profile, faults, server_options, options,
                           worker_count))
    except KeyboardInterrupt:  # Ctrl+C before the signal handlers were in place: a normal stop too
        click.echo("bridge serve: stopping", err=True)
    except errors.BridgeError as exc:
        click.echo(f"bridge serve: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    except OSError as exc:
        click.echo(f"bridge serve: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_INVALID)


async def _serve(
    endpoints: list[tuple[str, str | None, str | None]], host: str, port: int, api_key: str | None, profile: str,
    faults: dict[str, Any], server_options: dict[str, Any], options: dict[str, Any], worker_count: int,
) -> None:
    from bridge.local.server import LocalServer

    server = LocalServer(host=host, port=port, api_key=api_key, profile=profile, faults=faults,
                         **server_options)
    stop = asyncio.Event()
    failed: list[errors.BridgeError] = []

    def give_up(error: errors.BridgeError) -> None:
        # The workers of a --worker-command never came up: serving on would only queue jobs.
        failed.append(error)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for ep_id, spec, command in endpoints:
            if command is not None:
                server.add_endpoint(ep_id, worker_command=command, worker_count=worker_count,
                                    worker_options={"on_give_up": give_up}, **options)
            else:
                server.add_endpoint(ep_id, spec, **options)
        base_url = await server.start()
        click.echo(f"bridge local endpoint serving {base_url} "
                   f"(endpoints: {', '.join(e for e, _, _ in endpoints)}; profile {profile}"
                   f"{'; API key required' if api_key else ''}"
                   f"{'' if server.long_poll else '; no long polls'})")
        sys.stdout.flush()
        await stop.wait()
        if not failed:
            click.echo("bridge serve: stopping", err=True)
    finally:
        await server.stop()
    if failed:
        raise failed[0]


def register(group: click.Group) -> None:
    group.add_command(serve)
