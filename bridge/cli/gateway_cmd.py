"""``bridge gateway``: serve task streams to browsers (SSE) and, with ``--webhooks``, receive
RunPod's job webhooks, on one small aiohttp server bound to 127.0.0.1 by default."""

from __future__ import annotations

import click

from bridge.cli._common import handle_errors


@click.command("gateway")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="BRIDGE_GATEWAY_HOST",
              help="Address to bind (env BRIDGE_GATEWAY_HOST); expose it deliberately.")
@click.option("--port", default=8090, show_default=True, type=int, envvar="BRIDGE_GATEWAY_PORT",
              help="Port (env BRIDGE_GATEWAY_PORT).")
@click.option("--redis-url", default=None, envvar="BRIDGE_REDIS_URL",
              help="Redis holding the task streams (env BRIDGE_REDIS_URL, else the Celery backend's).")
@click.option("--webhooks/--no-webhooks", default=False,
              help="Also serve the webhook receiver at POST /webhooks/{ref}.")
@click.option("--cors-origin", default=None, envvar="BRIDGE_SSE_CORS_ORIGIN",
              help="Access-Control-Allow-Origin for the event streams (env BRIDGE_SSE_CORS_ORIGIN).")
@handle_errors
def gateway_command(host: str, port: int, redis_url: str | None, webhooks: bool, cors_origin: str | None) -> None:
    """Serve GET /streams/{task_id} (server-sent events, resumable with Last-Event-ID)."""
    from aiohttp import web

    from bridge.gateway.settings import default_redis_url
    from bridge.sse import add_routes

    url = redis_url or default_redis_url()
    app = web.Application(client_max_size=32 * 2**20)  # webhook bodies carry whole outputs
    add_routes(app, url, cors_origin=cors_origin)
    if webhooks:
        from bridge.webhooks.receiver import add_routes as add_webhook_routes

        add_webhook_routes(app, url)
    click.echo(f"bridge gateway on http://{host}:{port} (streams: /streams/{{task_id}})", err=True)
    from bridge.webhooks.receiver import SafeAccessLogger

    web.run_app(app, host=host, port=port, print=None, access_log_class=SafeAccessLogger)


def register(group: click.Group) -> None:
    group.add_command(gateway_command)
