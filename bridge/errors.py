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

Every error is picklable and survives Celery's JSON result serialisation: one constructor
(:class:`BridgeError`'s, from the fields each class declares) passes *all* the arguments,
positionally, to ``super().__init__``, and every argument is a JSON-safe scalar. The fields (``message``, ``job_id``, ``endpoint_id``,
``hint``, ``status_code``, ``retry_after``, ``error`` ...) are views of ``args``: set one
(``exc.job_id = "j"``) and ``args`` follows, so pickle and Celery's ``exc_type(*args)``
rebuild give back the same error. Construct positionally or by keyword
(``RateLimited("msg", job_id="j", retry_after=3)``). ``str(err)`` is the message plus what
to check. No error carries an API key: messages are built from ids and status text only,
and :func:`scrub` is applied to any text that came from outside.

``RETRYABLE`` lists the classes a caller may retry after backing off.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Generic, TypeVar, overload

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


def _layout(cls: type) -> dict[str, int]:
    """Field name -> index in ``args`` for an error class (its own fields and inherited ones)."""
    found = _LAYOUTS.get(cls)
    if found is None:
        found = _LAYOUTS[cls] = {name: f.index for klass in reversed(cls.__mro__)
                                 for name, f in vars(klass).items() if isinstance(f, Field)}
    return found


_LAYOUTS: dict[type, dict[str, int]] = {}


def scrub(text: str, *secrets: str | None) -> str:
    """Remove the given secrets and anything shaped like a credential from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


T = TypeVar("T")


class Field(Generic[T]):
    """An error field kept in ``args[index]``: the one copy that pickle and Celery's
    ``exc_type(*args)`` rebuild carry, so setting the field can never leave them stale."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Field[T]: ...
    @overload
    def __get__(self, obj: BaseException, owner: type | None = None) -> T: ...
    def __get__(self, obj: BaseException | None, owner: type | None = None) -> Field[T] | T:
        if obj is None:
            return self
        args = obj.args
        return args[self.index] if len(args) > self.index else None  # type: ignore[return-value]

    def __set__(self, obj: BaseException, value: T) -> None:
        args = list(obj.args)
        args.extend([None] * (self.index + 1 - len(args)))
        args[self.index] = value
        obj.args = tuple(args)


class _Hint(Field[str | None]):
    """``hint``: ``None`` in ``args`` reads as the class's ``default_hint``; the default
    itself is stored as ``None`` (what an error unpickled from an older version sets)."""

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Hint: ...
    @overload
    def __get__(self, obj: BaseException, owner: type | None = None) -> str: ...
    def __get__(self, obj: BaseException | None, owner: type | None = None) -> _Hint | str:
        if obj is None:
            return self
        value = super().__get__(obj, owner)
        return getattr(obj, "default_hint", "") if value is None else value

    def __set__(self, obj: BaseException, value: str | None) -> None:
        super().__set__(obj, None if value == getattr(obj, "default_hint", None) else value)


class BridgeError(Exception):
    """Base of all bridge errors.

    Args are positional so pickling and Celery's ``exc_type(*exc_message)`` rebuild work;
    each field below is ``args[i]`` (see :class:`Field`).
    """

    default_hint = ""

    message: Field[str] = Field(0)
    job_id: Field[str | None] = Field(1)
    endpoint_id: Field[str | None] = Field(2)
    hint = _Hint(3)

    #: Field values this class fills in when the caller gives none (RateLimited: 429).
    field_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, message: str, *args: Any, **fields: Any) -> None:
        """``Error(message, job_id, endpoint_id, hint, <the class's own fields>...)``,
        positionally (as Celery and pickle rebuild it) or by field name; every field lands
        in ``args`` at its index, unset ones as None."""
        layout = _layout(type(self))
        values: list[Any] = [message, *args]
        given = set(range(len(values)))
        for name, value in fields.items():
            index = layout.get(name)
            if index is None:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {name!r}")
            values.extend([None] * (index + 1 - len(values)))
            values[index] = value
            given.add(index)
        for name, value in self.field_defaults.items():
            if layout[name] not in given:
                values.extend([None] * (layout[name] + 1 - len(values)))
                values[layout[name]] = value
        values.extend([None] * (max(layout.values()) + 1 - len(values)))
        super().__init__(*values)
        # TimeoutError is an OSError, which keeps only two of several args in .args;
        # Celery rebuilds errors from .args, so every one is kept.
        self.args = tuple(values)

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

    status_code: Field[int | None] = Field(4)


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
    field_defaults: ClassVar[dict[str, Any]] = {"status_code": 429}

    retry_after: Field[float | None] = Field(5)


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

    status: Field[str | None] = Field(5)
    waited: Field[float | None] = Field(6)


class Timeout(BridgeError, TimeoutError):
    """Our own deadline passed. Subclasses the built-in ``TimeoutError`` like the SDK's."""

    default_hint = "the timeout you passed; the remote job may still be running unless cancelled"

    timeout: Field[float | None] = Field(4)


class RedisUnavailable(BridgeError):
    """bridge's Redis (journal, cancel keys, budgets, streams) stayed unreachable for longer
    than the outage bridge rides out (``BRIDGE_REDIS_OUTAGE``). ``url`` has its password masked."""

    default_hint = (
        "that Redis is running and reachable at that URL (BRIDGE_REDIS_URL or the result backend), "
        "and BRIDGE_REDIS_OUTAGE, how long bridge retries through an outage (default 300 s)"
    )

    url: Field[str | None] = Field(4)
    outage: Field[float | None] = Field(5)


class JobError(BridgeError):
    """The remote job reached a terminal state other than COMPLETED."""

    status = ""  # the terminal status this error stands for (a class constant)

    error: Field[Any] = Field(4)


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
