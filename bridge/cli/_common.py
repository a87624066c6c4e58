"""Shared CLI pieces: exit codes and the one place bridge errors become exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from bridge import errors

#: Exit codes, documented in the README's table.
EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the remote job ended FAILED, CANCELLED or TIMED_OUT
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_AUTH = 3  # 401/403
EXIT_NOT_FOUND = 4  # unknown endpoint or job
EXIT_UNAVAILABLE = 5  # rate limited, 5xx, unreachable, malformed response (after retries)
EXIT_TIMEOUT = 6  # our deadline passed
EXIT_INVALID = 7  # invalid input or configuration, plugin veto
EXIT_INTERRUPTED = 130  # Ctrl+C

_CODES: list[tuple[type[BaseException], int]] = [
    (errors.JobError, EXIT_JOB_FAILED),
    (errors.AuthenticationError, EXIT_AUTH),
    (errors.NotFound, EXIT_NOT_FOUND),
    (errors.Timeout, EXIT_TIMEOUT),
    (errors.InvalidRequest, EXIT_INVALID),
    (errors.ConfigurationError, EXIT_INVALID),
    (errors.JobRejected, EXIT_INVALID),
    (errors.BadRequest, EXIT_INVALID),
    (errors.BridgeError, EXIT_UNAVAILABLE),
]


def exit_code_for(exc: BaseException) -> int:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_UNAVAILABLE


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Print a bridge error as JSON on stderr and exit with its documented code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except errors.BridgeError as exc:
            body = {"error": type(exc).__name__, "message": str(exc)}
            if exc.job_id:
                body["job_id"] = exc.job_id
            click.echo(json.dumps(body), err=True)
            sys.exit(exit_code_for(exc))
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def endpoint_option(func: F) -> F:
    """``--endpoint-id/-e``: every command that targets an endpoint names it this way."""
    return click.option(
        "--endpoint-id", "-e", "endpoint_id", required=True, envvar="BRIDGE_ENDPOINT_ID",
        help="Endpoint id (env BRIDGE_ENDPOINT_ID).",
    )(func)
