"""Shared CLI pieces: exit codes, the one place bridge errors become exit codes, and the
checks that options get before anything is sent (a bad value exits 7 with one JSON line)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlparse

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


def echo_error(error: str, message: str, job_id: str | None = None, **extra: Any) -> None:
    """One JSON line on stderr, the documented error shape."""
    body: dict[str, Any] = {"error": error, "message": message}
    if job_id:
        body["job_id"] = job_id
    body.update(extra)
    click.echo(json.dumps(body, default=str), err=True)


def interrupted(message: str = "interrupted (Ctrl+C)", job_id: str | None = None, **extra: Any) -> NoReturn:
    """Say what an interrupt left behind, then exit 130."""
    echo_error("KeyboardInterrupt", message, job_id, **extra)
    sys.exit(EXIT_INTERRUPTED)


# -- option checks (each raises InvalidRequest: exit 7, one line) ----------------------------


def _invalid(message: str, option: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(message, None, None, f"the {option} option")


def check_policy(policy: Any, option: str = "--policy") -> dict[str, Any]:
    """A job policy: a JSON object whose documented keys have the documented types."""
    from bridge.local.policies import EndpointOptions, PolicyError, apply_policy

    if not isinstance(policy, dict):
        raise _invalid(f"{option} must be a JSON object such as {{\"executionTimeout\": 60000}}, "
                       f"got {type(policy).__name__} {json.dumps(policy)[:60]}", option)
    try:
        apply_policy(policy, EndpointOptions(), "local")  # the type rules the endpoint applies
    except PolicyError as exc:
        raise _invalid(f"{option}: {exc}", option) from None
    return policy


def check_url(url: str | None, option: str) -> str | None:
    """An absolute http(s) URL (or None)."""
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or any(c.isspace() for c in url):
        raise _invalid(f"{option} {url[:100]!r} is not an http(s) URL such as https://example.com/hook", option)
    return url


def check_header_value(value: str | None, option: str, *, secret: bool = False) -> str | None:
    """Text that can travel in an HTTP header: non-empty, no spaces or control characters."""
    if value is None:
        return None
    if not value or not value.isprintable() or any(c.isspace() for c in value) or not value.isascii():
        shown = "the value given" if secret else repr(value[:60])
        raise _invalid(f"{option}: {shown} is empty or has spaces, control or non-ASCII characters", option)
    return value


def check_seconds(value: float | None, option: str, *, zero: bool = False) -> float | None:
    """A positive, finite number of seconds (or None); ``zero`` allows 0."""
    if value is None:
        return None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        need = "0 or more" if zero else "more than 0"
        raise _invalid(f"{option} must be a finite number of seconds, {need}; got {value:g}", option)
    return value


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Print a bridge error as JSON on stderr and exit with its documented code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except errors.BridgeError as exc:
            echo_error(type(exc).__name__, str(exc), exc.job_id)
            sys.exit(exit_code_for(exc))
        except KeyboardInterrupt:
            interrupted()

    return wrapper  # type: ignore[return-value]


def endpoint_option(func: F) -> F:
    """``--endpoint-id/-e``: every command that targets an endpoint names it this way."""
    return click.option(
        "--endpoint-id", "-e", "endpoint_id", required=True, envvar="BRIDGE_ENDPOINT_ID",
        help="Endpoint id (env BRIDGE_ENDPOINT_ID).",
    )(func)
