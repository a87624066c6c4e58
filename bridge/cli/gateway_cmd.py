"""``bridge relay`` (alias ``bridge gateway``, its old name): serve task streams to browsers
(SSE) and, with ``--webhooks``, receive RunPod's job webhooks, on one small aiohttp server
bound to 127.0.0.1 by default. It relays; the Celery-side gateway is ``bridge.gateway``.

At start it checks its settings and Redis once: no ``BRIDGE_RELAY_SECRET`` (and no
``--open-streams``) exits 7, an unreachable Redis exits 5, both naming what to fix (the Redis
URL with its password masked). Its first log line names the address, the Redis and whether
streams need a token. SIGINT and SIGTERM stop it normally (exit 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import click

from bridge import errors
from bridge.cli._common import EXIT_INVALID, handle_errors

log = logging.getLogger("bridge.relay")


def check_redis(url: str, timeout: float = 5.0) -> None:
    """One PING; raises :class:`bridge.errors.RedisUnavailable` naming the (masked) URL."""
    import redis
    from redis.exceptions import RedisError

    from bridge.stream_hub import masked_url

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        password = client.connection_pool.connection_kwargs.get("password")
        raise errors.RedisUnavailable(
            f"cannot reach Redis at {masked_url(url)}: {errors.scrub(str(exc), password)}", None, None,
            "that Redis runs there and accepts this client (--redis-url, else BRIDGE_REDIS_URL or the "
            "Celery result backend's URL)", masked_url(url), None,
        ) from None
    finally:
        client.close()


@click.command("relay")
@click.option("--host", default="127.0.0.1", show_default=True, envvar=["BRIDGE_RELAY_HOST", "BRIDGE_GATEWAY_HOST"],
              help="Address to bind (env BRIDGE_RELAY_HOST); expose it deliberately.")
@click.option("--port", default=8090, show_default=True, type=int, envvar=["BRIDGE_RELAY_PORT", "BRIDGE_GATEWAY_PORT"],
              help="Port (env BRIDGE_RELAY_PORT).")
@click.option("--redis-url", default=None, envvar="BRIDGE_REDIS_URL",
              help="Redis holding the task streams (env BRIDGE_REDIS_URL, else the Celery backend's).")
@click.option("--webhooks/--no-webhooks", default=False,
              help="Also serve the webhook receiver at POST /webhooks/{ref}.")
@click.option("--cors-origin", default=None, envvar="BRIDGE_SSE_CORS_ORIGIN",
              help="Access-Control-Allow-Origin for the event streams (env BRIDGE_SSE_CORS_ORIGIN).")
@click.option("--open-streams", is_flag=True, default=False,
              help="Serve streams without a token: anyone who knows a task id reads its chunks. "
                   "Without it, BRIDGE_RELAY_SECRET must be set.")
@handle_errors
def relay_command(host: str, port: int, redis_url: str | None, webhooks: bool, cors_origin: str | None,
                  open_streams: bool) -> None:
    """Relay task streams to browsers: GET /streams/{task_id}?token=... (server-sent events,
    resumable with Last-Event-ID). Tokens come from bridge.stream_token(task_id) with the same
    BRIDGE_RELAY_SECRET. `bridge gateway` is an alias."""
    from bridge.gateway.settings import default_redis_url
    from bridge.stream_hub import masked_url
    from bridge.stream_tokens import relay_secret

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secret = None if open_streams else relay_secret()  # ConfigurationError: exit 7
    url = redis_url or default_redis_url()
    check_redis(url)  # RedisUnavailable: exit 5
    streams = "OPEN (no token needed: --open-streams)" if open_streams else "token required"
    try:
        asyncio.run(_serve(host, port, url, secret, webhooks, cors_origin,
                           f"bridge relay on http://{host}:{port}, Redis {masked_url(url)}; "
                           f"streams /streams/{{task_id}}: {streams}; "
                           f"webhooks {'/webhooks/{ref}' if webhooks else 'off'}"))
    except OSError as exc:
        click.echo(f"bridge relay: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_INVALID)


async def _serve(host: str, port: int, url: str, secret: bytes | None, webhooks: bool, cors_origin: str | None,
                 banner: str) -> None:
    from aiohttp import web

    from bridge.sse import add_routes
    from bridge.webhooks.receiver import MAX_BODY, SafeAccessLogger

    app = web.Application(client_max_size=MAX_BODY)
    add_routes(app, url, cors_origin=cors_origin, secret=secret, open_streams=secret is None)
    if webhooks:
        from bridge.webhooks.receiver import add_routes as add_webhook_routes

        add_webhook_routes(app, url)
    # Thousands of EventSource connections may arrive at once (a page load, a relay restart).
    runner = web.AppRunner(app, access_log_class=SafeAccessLogger, handle_signals=False)
    await runner.setup()
    _tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        log.info("%s", banner)
        await stop.wait()
        log.info("bridge relay: stopping")
    finally:
        await runner.cleanup()


def _tune_gc() -> None:
    """Fewer, not longer, collector pauses. Each open stream keeps ~60 objects alive, so a
    full collection at 10,000 readers stalls every stream for 0.2-0.5 s; Python's defaults
    (700, 10, 10) run one whenever the objects a wake-up leaves behind reach a quarter of the
    heap, several a minute under load. Larger thresholds let short-lived objects die young."""
    import gc

    gc.freeze()  # what start-up made lives for the whole run: never scan it again
    gc.set_threshold(50_000, 20, 100)


def _alias(command: click.Command, name: str) -> click.Command:
    """``command`` under an old name, hidden from ``bridge --help``."""
    kwargs: dict[str, Any] = {"params": command.params, "help": f"Alias of `bridge {command.name}`.",
                              "hidden": True}
    return click.Command(name, callback=command.callback, **kwargs)


def register(group: click.Group) -> None:
    group.add_command(relay_command)
    group.add_command(_alias(relay_command, "gateway"))
