"""One error tree for everything bridge raises.

::

    BridgeError                     base of every bridge error; .job_id, .endpoint_id, .hint
    ├── ConfigurationError          missing/invalid settings (no API key, bad base URL, ...)
    ├── InvalidRequest (ValueError) rejected before sending: not JSON-able, malformed args
    │   └── PayloadTooLarge         body over /run 10 MB or /runsync 20 MB
    ├── JobRejected                 a plugin vetoed the job before it was submitted
    ├── TransportError              the endpoint could not be reached (DNS, refused, reset)
    ├── EndpointError               the endpoint answered with an error status (.status_code)
    │   ├── BadRequest              400/413/422 and other unclassified 4xx
    │   ├── AuthenticationError     401/403: API key missing or wrong
    │   ├── NotFound                404: unknown endpoint, unknown or expired job
    │   ├── RateLimited             429 (.retry_after seconds, when the server said)
    │   ├── ServerError             5xx
    │   └── MalformedResponse       2xx whose body is not the documented shape
    │       └── UnknownStatus       a status outside RunPod's set lasted past BRIDGE_UNKNOWN_STATUS_TIMEOUT
    ├── Timeout (TimeoutError)      our own deadline passed while waiting
    ├── RedisUnavailable            bridge's Redis stayed unreachable past BRIDGE_REDIS_OUTAGE (.url masked)
    └── JobError                    the remote job ended in a non-success terminal state
        ├── JobFailed               FAILED (.error: the endpoint's error text)
        ├── JobCancelled            CANCELLED
        └── JobTimedOut             TIMED_OUT (the endpoint's executionTimeout/ttl)

Every error is picklable and survives Celery's JSON result serialisation: each class
passes *all* its constructor arguments, positionally, to ``super().__init__`` and every
argument is a JSON-safe scalar. ``str(err)`` is the message plus what to check. No error
carries an API key: messages are built from ids and status text only, and
:func:`scrub` is applied to any text that came from outside.

``RETRYABLE`` lists the classes a caller may retry after backing off.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "RETRYABLE",
    "AuthenticationError",
    "BadRequest",
    "BridgeError",
    "ConfigurationError",
    "EndpointError",
    "InvalidRequest",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobRejected",
    "JobTimedOut",
    "MalformedResponse",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RedisUnavailable",
    "ServerError",
    "Timeout",
    "TransportError",
    "UnknownStatus",
    "scrub",
]

_SECRET_PATTERNS = [
    # Bearer tokens and RunPod-style keys (rpa_..., rp_...), long hex/base64 runs.
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\brp[a-z]?_[A-Za-z0-9]{8,}\b"),
    # key: value pairs. An auth scheme after the name stays readable ("Authorization: Bearer
    # ***"), and so does a placeholder such as <key> in a hint: neither is a secret.
    re.compile(r"(?i)((?:api[_-]?key|token|secret|password|accessSecret|authorization)[\"']?\s*[:=]\s*[\"']?"
               r"(?:(?:bearer|basic)\s+)?)(?!(?:bearer|basic)\s)(?!<)[^\s\"',&}]+"),
]


def scrub(text: str, *secrets: str | None) -> str:
    """Remove the given secrets and anything shaped like a credential from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


class BridgeError(Exception):
    """Base of all bridge errors.

    Args are positional so pickling and Celery's ``exc_type(*exc_message)`` rebuild work.
    """

    default_hint = ""

    def __init__(
        self,
        message: str,
        job_id: str | None = None,
        endpoint_id: str | None = None,
        hint: str | None = None,
        *extra: Any,
    ) -> None:
        super().__init__(message, job_id, endpoint_id, hint, *extra)
        self.message = message
        self.job_id = job_id
        self.endpoint_id = endpoint_id
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        where = []
        if self.endpoint_id:
            where.append(f"endpoint {self.endpoint_id}")
        if self.job_id:
            where.append(f"job {self.job_id}")
        text = self.message
        if where:
            text = f"{text} [{', '.join(where)}]"
        if self.hint:
            text = f"{text}. Check: {self.hint}"
        return text


class ConfigurationError(BridgeError):
    default_hint = "the settings table in the README (arguments, bridge.* defaults, environment)"


class InvalidRequest(BridgeError, ValueError):
    default_hint = "the input must be JSON-serialisable (dicts, lists, str, numbers, bool, None)"


class PayloadTooLarge(InvalidRequest):
    default_hint = "/run takes at most 10 MB and /runsync 20 MB; upload big inputs and pass a URL"


class JobRejected(BridgeError):
    """A plugin refused the job before it was submitted; nothing was sent."""

    default_hint = "the plugin named in the message and its options"


class TransportError(BridgeError):
    default_hint = "the endpoint base URL, the network and proxy settings (HTTPS_PROXY, NO_PROXY)"


class EndpointError(BridgeError):
    """The endpoint answered with an HTTP error status."""

    default_hint = "the endpoint id and the endpoint's own logs"

    def __init__(
        self,
        message: str,
        job_id: str | None = None,
        endpoint_id: str | None = None,
        hint: str | None = None,
        status_code: int | None = None,
        *extra: Any,
    ) -> None:
        super().__init__(message, job_id, endpoint_id, hint, status_code, *extra)
        self.status_code = status_code


class BadRequest(EndpointError):
    default_hint = "the request body: input, policy, webhook and s3Config shapes"


class AuthenticationError(EndpointError):
    default_hint = "the API key (argument api_key, bridge.api_key or RUNPOD_API_KEY)"


class NotFound(EndpointError):
    default_hint = (
        "the endpoint id, and that the job id exists and has not expired "
        "(results are kept 30 min after /run, 1 min after /runsync, or until policy.ttl)"
    )
    #: The hint of a 404 on a route that names no job (/run, /runsync, /health, /purge-queue).
    endpoint_hint = "the endpoint id, and that the base URL is the endpoints' API (ending in /v2)"


class RateLimited(EndpointError):
    default_hint = "your request rate against the endpoint's limits; bridge retries with backoff"

    def __init__(
        self,
        message: str,
        job_id: str | None = None,
        endpoint_id: str | None = None,
        hint: str | None = None,
        status_code: int | None = 429,
        retry_after: float | None = None,
        *extra: Any,
    ) -> None:
        super().__init__(message, job_id, endpoint_id, hint, status_code, retry_after, *extra)
        self.retry_after = retry_after


class ServerError(EndpointError):
    default_hint = "the endpoint's health and logs; bridge retries 5xx with backoff"


class MalformedResponse(EndpointError):
    default_hint = "that the base URL points at a RunPod-compatible endpoint (…/v2)"


class UnknownStatus(MalformedResponse):
    """The job kept a status that is not one of RunPod's (.status) for .waited seconds.

    The wait gave up; the remote job may still be running (it was not cancelled).
    """

    default_hint = ("that the base URL points at a RunPod-compatible endpoint; "
                    "BRIDGE_UNKNOWN_STATUS_TIMEOUT sets how long such a status is waited on")

    def __init__(
        self,
        message: str,
        job_id: str | None = None,
        endpoint_id: str | None = None,
        hint: str | None = None,
        status_code: int | None = None,
        status: str | None = None,
        waited: float | None = None,
        *extra: Any,
    ) -> None:
        super().__init__(message, job_id, endpoint_id, hint, status_code, status, waited, *extra)
        self.status = status
        self.waited = waited


class Timeout(BridgeError, TimeoutError):
    """Our own deadline passed. Subclasses the built-in ``TimeoutError`` like the SDK's."""

    default_hint = "the timeout you passed; the remote job may still be running unless cancelled"

    def __init__(
        self,
        message: str,
        job_id: str | None = None,
        endpoint_id: str | None = None,
        hint: str | None = None,
        timeout: float | None = None,
        *extra: Any,
    ) -> None:
        super().__init__(message, job_id, endpoint_id, hint, timeout, *extra)
        # TimeoutError is an OSError, which keeps only two of several args in .args;
        # Celery rebuilds errors from .args, so restore all of them.
        self.args = (message, job_id, endpoint_id, hint, timeout, *extra)
        self.timeout = timeout


class RedisUnavailable(BridgeError):
    """bridge's Redis (journal, cancel keys, budgets, streams) stayed unreachable for longer
    than the outage bridge rides out (``BRIDGE_REDIS_OUTAGE``). ``url`` has its password masked."""

    default_hint = (
        "that Redis is running and reachable at that URL (BRIDGE_REDIS_URL or the result backend), "
        "and BRIDGE_REDIS_OUTAGE, how long bridge retries through an outage (default 300 s)"
    )

    def __init__(
        self,
        message: str,
        job_id: str | None = None,
        endpoint_id: str | None = None,
        hint: str | None = None,
        url: str | None = None,
        outage: float | None = None,
        *extra: Any,
    ) -> None:
        super().__init__(message, job_id, endpoint_id, hint, url, outage, *extra)
        self.url = url
        self.outage = outage


class JobError(BridgeError):
    """The remote job reached a terminal state other than COMPLETED."""

    status = ""

    def __init__(
        self,
        message: str,
        job_id: str | None = None,
        endpoint_id: str | None = None,
        hint: str | None = None,
        error: Any = None,
        *extra: Any,
    ) -> None:
        super().__init__(message, job_id, endpoint_id, hint, error, *extra)
        self.error = error


class JobFailed(JobError):
    status = "FAILED"
    default_hint = "the error text above and the handler's logs"


class JobCancelled(JobError):
    status = "CANCELLED"
    default_hint = "who cancelled the job (a revoke, a purge, bridge cancel, a timeout)"


class JobTimedOut(JobError):
    status = "TIMED_OUT"
    default_hint = "policy.executionTimeout and policy.ttl, and whether workers were available"


#: Errors after which the same request may be sent again (after backing off).
RETRYABLE: tuple[type[BridgeError], ...] = (RateLimited, ServerError, TransportError)
