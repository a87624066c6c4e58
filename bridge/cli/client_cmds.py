"""``bridge run | status | cancel | health | purge``: thin wrappers over the sync client.

Every command prints JSON on stdout; errors go to stderr as JSON with the exit codes of
:mod:`bridge.cli._common` (1 job failed/cancelled/timed out, 3 auth, 4 not found,
5 unavailable, 6 our timeout, 7 invalid input).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from bridge import errors
from bridge.cli._common import echo_json, endpoint_option, handle_errors
from bridge.client.sync import Endpoint

F = TypeVar("F", bound=Callable[..., Any])


def _connection_options(func: F) -> F:
    func = click.option(
        "--api-key", default=None, metavar="KEY",
        help="API key (default: bridge.api_key, then RUNPOD_API_KEY).",
    )(func)
    return click.option(  # type: ignore[return-value]
        "--base-url", default=None, metavar="URL",
        help="Base URL ending in /v2 (default: RUNPOD_ENDPOINT_BASE_URL, then https://api.runpod.ai/v2).",
    )(func)


def _endpoint(endpoint_id: str, api_key: str | None, base_url: str | None) -> Endpoint:
    return Endpoint(endpoint_id, api_key=api_key, base_url=base_url)


def _read_json(text: str, what: str) -> Any:
    """JSON from an argument: the text itself, ``-`` for stdin or ``@path`` for a file."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise errors.InvalidRequest(f"cannot read {what} from {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise errors.InvalidRequest(
            f"{what} is not valid JSON: {exc}", None, None, f"the {what} argument (JSON text, - or @file)"
        ) from None


@click.command("run")
@endpoint_option
@click.argument("input_json", metavar="[INPUT]", default="{}", required=False)
@click.option("--sync", "use_sync", is_flag=True, help="Use /runsync (the endpoint holds the request).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the result, or print the job id and return.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Give up waiting after this long (exit 6). Default: wait as long as it takes.")
@click.option("--cancel-on-timeout", is_flag=True, help="Cancel the remote job when --timeout passes.")
@click.option("--stream", "stream", is_flag=True, help="Print each streamed chunk as a JSON line.")
@click.option("--webhook", default=None, metavar="URL", help="URL the endpoint POSTs the result to.")
@click.option("--policy", "policy_json", default=None, metavar="JSON",
              help='Job policy, e.g. \'{"executionTimeout": 60000, "ttl": 3600000}\'.')
@click.option("--idempotency-key", default=None, metavar="KEY",
              help="Same key, same job (default: a new key per command).")
@_connection_options
@handle_errors
def run_cmd(
    endpoint_id: str, input_json: str, use_sync: bool, wait: bool, timeout: float | None,
    cancel_on_timeout: bool, stream: bool, webhook: str | None, policy_json: str | None,
    idempotency_key: str | None, api_key: str | None, base_url: str | None,
) -> None:
    """Submit a job. INPUT is JSON text, - for stdin or @file (default {}).

    Prints {"id", "status", "output"} once the job ends, or {"id", "status"} with
    --no-wait. A job that ends FAILED, CANCELLED or TIMED_OUT exits 1.
    """
    payload = _read_json(input_json, "INPUT")
    policy = _read_json(policy_json, "--policy") if policy_json else None
    options: dict[str, Any] = {"webhook": webhook, "policy": policy, "idempotency_key": idempotency_key}
    with _endpoint(endpoint_id, api_key, base_url) as endpoint:
        if use_sync:
            output = endpoint.run_sync(
                payload, 86400 if timeout is None else timeout, cancel_on_timeout=cancel_on_timeout, **options
            )
            echo_json({"status": "COMPLETED", "output": output})
            return
        job = endpoint.run(payload, **options)
        if not wait:
            echo_json({"id": job.job_id, "status": job.last_status or "IN_QUEUE"})
            return
        if stream:
            for chunk in job.stream(timeout):
                click.echo(json.dumps(chunk, default=str))
        output = job.output(timeout, cancel_on_timeout=cancel_on_timeout)
        echo_json({"id": job.job_id, "status": "COMPLETED", "output": output})


@click.command("status")
@endpoint_option
@click.argument("job_id")
@click.option("--wait", type=float, default=None, metavar="SECONDS",
              help="Hold the request up to this long for the job to end (long poll where offered).")
@_connection_options
@handle_errors
def status_cmd(endpoint_id: str, job_id: str, wait: float | None, api_key: str | None,
               base_url: str | None) -> None:
    """Print a job's status body as the endpoint returns it."""
    with _endpoint(endpoint_id, api_key, base_url) as endpoint:
        echo_json(endpoint.job(job_id).fetch(wait))


@click.command("cancel")
@endpoint_option
@click.argument("job_id")
@_connection_options
@handle_errors
def cancel_cmd(endpoint_id: str, job_id: str, api_key: str | None, base_url: str | None) -> None:
    """Cancel a queued or running job."""
    with _endpoint(endpoint_id, api_key, base_url) as endpoint:
        echo_json(endpoint.job(job_id).cancel())


@click.command("health")
@endpoint_option
@_connection_options
@handle_errors
def health_cmd(endpoint_id: str, api_key: str | None, base_url: str | None) -> None:
    """Print the endpoint's job and worker counts."""
    with _endpoint(endpoint_id, api_key, base_url) as endpoint:
        echo_json(endpoint.health())


@click.command("purge")
@endpoint_option
@_connection_options
@handle_errors
def purge_cmd(endpoint_id: str, api_key: str | None, base_url: str | None) -> None:
    """Remove every queued job of the endpoint (running jobs keep running)."""
    with _endpoint(endpoint_id, api_key, base_url) as endpoint:
        echo_json(endpoint.purge_queue())


def register(group: click.Group) -> None:
    for command in (run_cmd, status_cmd, cancel_cmd, health_cmd, purge_cmd):
        group.add_command(command)
