"""``bridge run | status | cancel | health | purge``: thin wrappers over the sync client;
``bridge run`` drives the one job lifecycle with the installed plugins.

Every command prints JSON on stdout; errors go to stderr as JSON with the exit codes of
:mod:`bridge.cli._common` (1 job failed/cancelled/timed out, 3 auth, 4 not found,
5 unavailable, 6 our timeout, 7 invalid input).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import click

from bridge import errors
from bridge.cli._common import (
    check_header_value,
    check_policy,
    check_seconds,
    check_url,
    echo_json,
    endpoint_option,
    handle_errors,
    interrupted,
)
from bridge.client.sync import Endpoint, Job
from bridge.lifecycle.drive import SyncDriver
from bridge.lifecycle.job import JobRequest, run_job, start
from bridge.lifecycle.stages import Stages

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


class _RunEndpoint(Endpoint):
    """An endpoint that remembers the last job it made (from /run's or /runsync's answer),
    so that Ctrl+C can cancel it and ``--sync`` can print its id."""

    last_job: Job | None = None

    def _new_job(self, job_id: str, body: Mapping[str, Any] | None = None) -> Job:
        job = super()._new_job(job_id, body)
        self.last_job = job
        return job


def _endpoint(endpoint_id: str, api_key: str | None, base_url: str | None, plugins: bool = False) -> _RunEndpoint:
    # The base URL is checked by the client (ConfigurationError, exit 7); the key here,
    # since requests would raise a bare ValueError for a header it cannot send.
    check_header_value(api_key, "--api-key", secret=True)
    return _RunEndpoint(endpoint_id, api_key=api_key, base_url=base_url, plugins=plugins)


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


def _check_run_flags(use_sync: bool, wait: bool, stream: bool, timeout: float | None,
                     cancel_on_timeout: bool) -> None:
    """Flags that cannot work together are refused rather than silently ignored."""
    clashes = [
        (use_sync and not wait, "--sync waits for the result; it cannot be combined with --no-wait"),
        (use_sync and stream, "--stream reads /stream after /run; it cannot be combined with --sync"),
        (stream and not wait, "--stream waits for the chunks; it cannot be combined with --no-wait"),
        (not wait and timeout is not None, "--timeout bounds the wait; it means nothing with --no-wait"),
        (cancel_on_timeout and timeout is None, "--cancel-on-timeout needs --timeout SECONDS"),
    ]
    for clash, message in clashes:
        if clash:
            raise errors.InvalidRequest(message, None, None, "the options of bridge run (bridge run --help)")


class _RunStages(Stages):
    """``bridge run``'s stages: a first Ctrl+C is held from the submit until /run answers,
    then raised: the job id is known by then, so the job can be cancelled instead of left
    running unseen. A second Ctrl+C stops at once."""

    def __init__(self, hold: bool) -> None:
        self._hold = hold  # not around /runsync: it holds the answer (and the id) for long
        self._pressed: list[bool] = []
        self._previous: Any = None

    def claim(self, ctx: Any) -> None:
        if not self._hold or threading.current_thread() is not threading.main_thread():
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self._pressed:
                raise KeyboardInterrupt
            self._pressed.append(True)
            click.echo("bridge run: Ctrl+C: the job is cancelled as soon as /run answers with its id "
                       "(Ctrl+C again to quit without cancelling)", err=True)

        self._previous = signal.signal(signal.SIGINT, on_sigint)

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self._pressed:
            raise KeyboardInterrupt

    def release(self, ctx: Any) -> None:
        self._restore()

    def record(self, ctx: Any, job_id: str) -> None:
        self._restore()


def _cancel_and_exit(endpoint: _RunEndpoint, use_sync: bool) -> NoReturn:
    """After Ctrl+C: cancel the job this command started, say what happened, exit 130."""
    job = endpoint.last_job
    if job is None:
        if use_sync:
            interrupted("interrupted (Ctrl+C) while /runsync held the request: the endpoint had not "
                        "sent the job id yet, so the job could not be cancelled and may still run. "
                        "Without --sync, Ctrl+C cancels the job", cancelled=False)
        interrupted("interrupted (Ctrl+C) before /run answered: no job id was received, so nothing "
                    "could be cancelled; a job may still have been created", cancelled=False)
    again = f"bridge cancel -e {endpoint.endpoint_id} {job.job_id}"
    try:
        outcome = job.cancel()
    except errors.BridgeError as exc:
        interrupted(f"interrupted (Ctrl+C); cancelling job {job.job_id} failed: {exc.message}; it may "
                    f"still be running ({again})", job.job_id, cancelled=False)
    except KeyboardInterrupt:
        interrupted(f"interrupted (Ctrl+C) twice; job {job.job_id} may still be running ({again})",
                    job.job_id, cancelled=False)
    status = outcome.get("status")
    if status == "CANCELLED":
        interrupted(f"interrupted (Ctrl+C); cancelled remote job {job.job_id}: endpoint answered status "
                    f"CANCELLED", job.job_id, cancelled=True, cancel=outcome)
    # It ended (or was ending) on its own before the cancel reached it.
    interrupted(f"interrupted (Ctrl+C); asked to cancel job {job.job_id}, the endpoint answered status "
                f"{status}", job.job_id, cancelled=False, cancel=outcome)


@click.command("run")
@endpoint_option
@click.argument("input_json", metavar="[INPUT]", default="{}", required=False)
@click.option("--sync", "use_sync", is_flag=True,
              help="Use /runsync (the endpoint holds the request; up to 20 MB of input). Ctrl+C "
                   "cancels the job only once the endpoint has sent its id.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the result, or print the job id and return (the job keeps running).")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Give up waiting after this long (exit 6). Default: wait as long as it takes.")
@click.option("--cancel-on-timeout", is_flag=True, help="Cancel the remote job when --timeout passes.")
@click.option("--stream", "stream", is_flag=True, help="Print each streamed chunk as a JSON line.")
@click.option("--webhook", default=None, metavar="URL", help="http(s) URL the endpoint POSTs the result to.")
@click.option("--policy", "policy_json", default=None, metavar="JSON",
              help='Job policy, a JSON object, e.g. \'{"executionTimeout": 60000, "ttl": 3600000}\'.')
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
    --no-wait. A job that ends FAILED, CANCELLED or TIMED_OUT exits 1. Ctrl+C cancels
    the job and exits 130.
    """
    # Everything is checked before anything is sent.
    _check_run_flags(use_sync, wait, stream, timeout, cancel_on_timeout)
    check_seconds(timeout, "--timeout")
    check_url(webhook, "--webhook")
    check_header_value(idempotency_key, "--idempotency-key")
    policy = check_policy(_read_json(policy_json, "--policy")) if policy_json is not None else None
    payload = _read_json(input_json, "INPUT")
    options: dict[str, Any] = {"webhook": webhook, "policy": policy, "idempotency_key": idempotency_key}
    endpoint = _endpoint(endpoint_id, api_key, base_url, plugins=True)  # as bridge batch and the tasks
    with endpoint:
        try:
            result = _run(endpoint, payload, options, use_sync, wait, stream, timeout, cancel_on_timeout)
        except KeyboardInterrupt:
            _cancel_and_exit(endpoint, use_sync)
        echo_json(result)


def _run(endpoint: _RunEndpoint, payload: Any, options: dict[str, Any], use_sync: bool, wait: bool,
         stream: bool, timeout: float | None, cancel_on_timeout: bool) -> dict[str, Any]:
    """The job through the one lifecycle, plugins included, as ``bridge batch`` and the
    Celery tasks run it; streamed chunks are printed as they come."""
    stages = _RunStages(hold=not use_sync)
    request = JobRequest(payload, options["webhook"], options["policy"], None, options["idempotency_key"],
                         timeout=timeout, cancel_on_timeout=cancel_on_timeout, stream=stream)
    ctx = endpoint._context()
    if not wait:
        job = SyncDriver(endpoint.transport.send, endpoint.hooks, stages).run(start(endpoint, request, ctx))
        return {"id": job.job_id, "status": job.last_status or "IN_QUEUE"}
    if use_sync:
        request.runsync = endpoint.waits.poll.long_poll if endpoint.waits.poll.long_poll > 0 else 90.0
    steps = SyncDriver(endpoint.transport.send, endpoint.hooks, stages).steps(run_job(endpoint, request, ctx))
    while True:
        try:
            chunks = next(steps)
        except StopIteration as stop:
            output = stop.value
            break
        for chunk in chunks:
            click.echo(json.dumps(chunk, default=str))
    last = endpoint.last_job
    return {"id": None if last is None else last.job_id, "status": "COMPLETED", "output": output}


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
    check_seconds(wait, "--wait", zero=True)
    with _endpoint(endpoint_id, api_key, base_url) as endpoint:
        echo_json(endpoint.job(job_id).fetch(wait))


def _one_request(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A command that sends one request with the sync client and prints the answer as JSON.
    The decorated function takes the endpoint and the command's own arguments (declared
    with click decorators under this one) and returns the answer; its docstring is the help."""

    def make(ask: Callable[..., Any]) -> click.Command:
        @handle_errors
        def command(endpoint_id: str, api_key: str | None, base_url: str | None, **args: Any) -> None:
            with _endpoint(endpoint_id, api_key, base_url) as endpoint:
                echo_json(ask(endpoint, **args))

        # Parameters in the order a stack of decorators gives: -e, the command's own, the connection.
        command = _connection_options(command)
        command.__click_params__.extend(getattr(ask, "__click_params__", []))  # type: ignore[attr-defined]
        return click.command(name, help=ask.__doc__)(endpoint_option(command))

    return make


@_one_request("cancel")
@click.argument("job_id")
def cancel_cmd(endpoint: Endpoint, job_id: str) -> Any:
    """Cancel a queued or running job."""
    return endpoint.job(job_id).cancel()


@_one_request("health")
def health_cmd(endpoint: Endpoint) -> Any:
    """Print the endpoint's job and worker counts."""
    return endpoint.health()


@_one_request("purge")
def purge_cmd(endpoint: Endpoint) -> Any:
    """Remove every queued job of the endpoint (running jobs keep running)."""
    return endpoint.purge_queue()


def register(group: click.Group) -> None:
    for command in (run_cmd, status_cmd, cancel_cmd, health_cmd, purge_cmd):
        group.add_command(command)
