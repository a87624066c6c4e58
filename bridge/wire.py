"""The wire format of RunPod-style endpoints, without any I/O: building requests (URLs,
headers, the job request body, payload checks) and turning every HTTP outcome into a value
or a :mod:`bridge.errors` error. This is the ONE place answers and transport failures
become errors; the transports (:mod:`bridge.transport`) only move bytes. Public: the
clients, the gateway and the lifecycle all build their :class:`Call` values here.
(``bridge.client._wire`` is the old private path, kept as a re-export.)
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from bridge import __version__, errors
from bridge.config import is_runpod_api, resolve_api_key, resolve_base_url
from bridge.job_status import JobStatus, is_terminal
from bridge.known_keys import EXCERPT as _EXCERPT
from bridge.known_keys import MASK, MIN_SCRUBBED_KEY, holds_key, known_keys, remember_key, scrub_value
from bridge.known_keys import safe_text as _text
from bridge.transport_errors import transport_error

__all__ = [
    "BODY_KEYS",
    "CONNECT_TIMEOUT",
    "HOLD_MARGIN",
    "KNOWN_STATUSES",
    "MASK",
    "MIN_SCRUBBED_KEY",
    "READ_TIMEOUT",
    "RUNSYNC_LIMIT",
    "RUNSYNC_WAIT_MAX_MS",
    "RUNSYNC_WAIT_MIN_MS",
    "RUN_LIMIT",
    "Call",
    "Wire",
    "encode",
    "is_known_status",
    "known_keys",
    "new_idempotency_key",
    "parse_retry_after",
    "remember_key",
    "request_body",
    "scrub_value",
    "terminal",
    "transport_error",
]

#: Request body limits documented by RunPod (bytes of JSON).
RUN_LIMIT = 10 * 1024 * 1024
RUNSYNC_LIMIT = 20 * 1024 * 1024
#: Keys of the SDK's request-body form besides ``input``.
BODY_KEYS = frozenset({"webhook", "policy", "s3Config"})
#: Seconds allowed to open a connection.
CONNECT_TIMEOUT = 10.0
#: Seconds allowed for the answer to a plain request (run, status, stream), as in the SDK.
READ_TIMEOUT = 10.0
#: Seconds added to a held request (long poll, runsync) beyond what the server may hold it.
HOLD_MARGIN = 10.0
#: What to check when an endpoint answers with a redirect.
REDIRECT_HINT = (
    "the base URL (base_url=, bridge.endpoint_url_base, RUNPOD_ENDPOINT_BASE_URL): RunPod's API "
    "does not redirect, so a redirect means the URL points elsewhere (http instead of https, a "
    "missing /v2, a login page or proxy in between)"
)
#: runsync's ``wait`` bounds in ms (RunPod's documented range).
RUNSYNC_WAIT_MIN_MS = 1000
RUNSYNC_WAIT_MAX_MS = 300_000


@dataclass(frozen=True)
class Call:
    """One HTTP request to make: everything the I/O layer needs, and what to blame on failure."""

    method: str
    url: str
    route: str
    headers: Mapping[str, str] = field(repr=False)  # holds the Authorization header
    body: bytes | None = None
    read_timeout: float = READ_TIMEOUT
    job_id: str | None = None


def request_body(
    input: Any,
    webhook: str | None = None,
    policy: Mapping[str, Any] | None = None,
    s3_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON job request. A dict with an ``input`` key and otherwise only ``webhook``,
    ``policy`` or ``s3Config`` is already a request body (the SDK's form); anything else,
    ``{}`` included, is the input itself. Keyword options override the body's own keys."""
    if isinstance(input, Mapping) and "input" in input and set(input) <= BODY_KEYS | {"input"}:
        body = dict(input)
    else:
        body = {"input": input}
    if webhook is not None:
        body["webhook"] = webhook
    if policy is not None:
        body["policy"] = dict(policy)
    if s3_config is not None:
        body["s3Config"] = dict(s3_config)
    return body


def encode(body: Any, limit: int, route: str, endpoint_id: str | None = None) -> bytes:
    """JSON bytes of ``body``, or InvalidRequest / PayloadTooLarge before anything is sent."""
    try:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise errors.InvalidRequest(
            f"the /{route} request is not JSON-serialisable: {errors.scrub(str(exc))[:_EXCERPT]}",
            None,
            endpoint_id,
        ) from None
    if len(data) > limit:
        raise errors.PayloadTooLarge(
            f"the /{route} request body is {len(data):,} bytes, over the {limit:,}-byte limit",
            None,
            endpoint_id,
        )
    return data


def new_idempotency_key() -> str:
    """A random UUID4. Not from os.urandom: that syscall cost ~0.15 ms per /run here, and
    the key needs uniqueness, not secrecy (``random`` is reseeded in forked children)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


class Wire:
    """Requests and response handling for one endpoint. Settings are read once, here."""

    def __init__(self, endpoint_id: str, api_key: str | None = None, base_url: str | None = None) -> None:
        if not endpoint_id or not isinstance(endpoint_id, str) or "/" in endpoint_id:
            raise errors.ConfigurationError(
                f"endpoint id {endpoint_id!r} is not a plain id", None, None, "the endpoint_id argument"
            )
        self.endpoint_id = endpoint_id
        self.base_url = resolve_base_url(base_url)
        self.api_key = resolve_api_key(api_key)
        remember_key(self.api_key)
        if self.api_key is None and is_runpod_api(self.base_url):
            raise errors.ConfigurationError(
                "no API key for RunPod's hosted API", None, endpoint_id,
                "pass api_key=, set bridge.api_key or RUNPOD_API_KEY",
            )
        self.prefix = f"{self.base_url}/{quote(endpoint_id, safe='')}"
        self.headers: dict[str, str] = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"bridge/{__version__}",
        }
        if self.api_key:
            self.headers["Authorization"] = f"Bearer {self.api_key}"

    def __repr__(self) -> str:  # never shows the key
        return f"Wire({self.endpoint_id!r}, base_url={self.base_url!r})"

    # -- building -------------------------------------------------------------------------

    def _job_url(self, op: str, job_id: str) -> str:
        return f"{self.prefix}/{op}/{quote(str(job_id), safe='')}"

    def run(
        self,
        input: Any,
        webhook: str | None = None,
        policy: Mapping[str, Any] | None = None,
        s3_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        wait: float | None = None,
    ) -> Call:
        """``POST /run``; with ``wait`` (seconds) ``POST /runsync?wait=``, which the endpoint
        may hold until the job ends (as ``status(wait=)`` asks ``/status-sync``)."""
        route, limit = ("run", RUN_LIMIT) if wait is None else ("runsync", RUNSYNC_LIMIT)
        body = encode(request_body(input, webhook, policy, s3_config), limit, route, self.endpoint_id)
        headers = {**self.headers, "Idempotency-Key": idempotency_key or new_idempotency_key()}
        if wait is None:
            return Call("POST", f"{self.prefix}/run", route, headers, body)
        wait_ms = int(min(RUNSYNC_WAIT_MAX_MS, max(RUNSYNC_WAIT_MIN_MS, wait * 1000)))
        return Call("POST", f"{self.prefix}/runsync?wait={wait_ms}", route, headers, body,
                    read_timeout=wait_ms / 1000 + HOLD_MARGIN)

    def runsync(self, input: Any, wait: float, *options: Any, **named: Any) -> Call:
        """:meth:`run` with ``wait`` (the positional form callers already use)."""
        return self.run(input, *options, wait=wait, **named)

    def status(self, job_id: str, wait: float | None = None) -> Call:
        if wait is None:
            return Call("GET", self._job_url("status", job_id), "status", self.headers, job_id=job_id)
        wait_ms = max(1, int(wait * 1000))
        return Call(
            "GET", f"{self._job_url('status-sync', job_id)}?wait={wait_ms}", "status-sync",
            self.headers, read_timeout=wait_ms / 1000 + HOLD_MARGIN, job_id=job_id,
        )

    def stream(self, job_id: str, wait: float | None = None) -> Call:
        """``GET /stream``; ``wait`` asks the endpoint to hold the read until a chunk or the
        end (bridge's local endpoint does; others answer at once and are polled)."""
        if wait is None:
            return Call("GET", self._job_url("stream", job_id), "stream", self.headers, job_id=job_id)
        wait_ms = max(1, int(wait * 1000))
        return Call("GET", f"{self._job_url('stream', job_id)}?wait={wait_ms}", "stream", self.headers,
                    read_timeout=wait_ms / 1000 + HOLD_MARGIN, job_id=job_id)

    def cancel(self, job_id: str, timeout: float = 3.0) -> Call:
        return Call("POST", self._job_url("cancel", job_id), "cancel", self.headers,
                    read_timeout=timeout, job_id=job_id)

    def retry(self, job_id: str, timeout: float = READ_TIMEOUT) -> Call:
        return Call("POST", self._job_url("retry", job_id), "retry", self.headers,
                    read_timeout=timeout, job_id=job_id)

    def purge_queue(self, timeout: float = 3.0) -> Call:
        return Call("POST", f"{self.prefix}/purge-queue", "purge-queue", self.headers, read_timeout=timeout)

    def health(self, timeout: float = 3.0) -> Call:
        return Call("GET", f"{self.prefix}/health", "health", self.headers, read_timeout=timeout)

    # -- interpreting ---------------------------------------------------------------------

    def _text(self, raw: bytes | str) -> str:
        return _text(raw)

    def response(
        self, call: Call, status_code: int, headers: Mapping[str, str], raw: bytes
    ) -> dict[str, Any]:
        """The JSON object of a 2xx answer, or the bridge error for anything else."""
        if 200 <= status_code < 300:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise errors.MalformedResponse(
                    f"/{call.route} answered HTTP {status_code} with a body that is not a JSON object: "
                    f"{self._text(raw)!r}",
                    call.job_id, self.endpoint_id, None, status_code,
                )
            if call.route in ("run", "runsync", "status", "status-sync", "stream") and not (
                isinstance(body.get("status"), str) and (call.route not in ("run", "runsync") or body.get("id"))
            ):
                raise errors.MalformedResponse(
                    f"/{call.route} answered without the id/status fields: {self._text(raw)!r}",
                    call.job_id, self.endpoint_id, None, status_code,
                )
            # An endpoint may echo a key bridge sent (in an output, an error, a chunk):
            # masked here, the one place every answer passes, before anything stores or logs it.
            return scrub_value(body) if holds_key(raw) else body
        raise self.http_error(call, status_code, headers, raw)

    def http_error(
        self, call: Call, status_code: int, headers: Mapping[str, str], raw: bytes
    ) -> errors.EndpointError:
        if 300 <= status_code < 400:
            return self.redirect_error(call, status_code, headers)
        said = self._text(raw)
        what = f"{call.method} /{call.route} answered HTTP {status_code}" + (f": {said}" if said else "")
        args = (what, call.job_id, self.endpoint_id, None, status_code)
        if status_code in (401, 403):
            return errors.AuthenticationError(*args)
        if status_code == 404:
            # Without a job in the request only the endpoint can be unknown: no job-expiry hint.
            hint = None if call.job_id else errors.NotFound.endpoint_hint
            return errors.NotFound(what, call.job_id, self.endpoint_id, hint, status_code)
        if status_code == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            return errors.RateLimited(what, call.job_id, self.endpoint_id, None, 429, retry_after)
        if status_code >= 500:
            return errors.ServerError(*args)
        return errors.BadRequest(*args)

    def redirect_error(self, call: Call, status_code: int, headers: Mapping[str, str]) -> errors.EndpointError:
        """A 3xx: never followed (it would resend the Authorization header to wherever it
        points, and a POST may become a GET), always an error naming where it pointed."""
        location = headers.get("Location")
        where = f"to {self._text(location)!r}" if location else "without a Location header"
        return errors.EndpointError(
            f"{call.method} /{call.route} answered HTTP {status_code}, a redirect {where}; bridge does "
            "not follow redirects", call.job_id, self.endpoint_id, REDIRECT_HINT, status_code,
        )

    def transport_error(self, call: Call, exc: BaseException) -> errors.TransportError:
        return transport_error(call, exc, base_url=self.base_url, endpoint_id=self.endpoint_id)

    def timeout_error(self, job_id: str | None, timeout: float | None, status: str | None,
                      cancelled: str = "") -> errors.Timeout:
        what = f"job not finished after {timeout or 0:g} s (last status {status or 'unknown'})"
        return errors.Timeout(what + cancelled, job_id, self.endpoint_id, None, timeout)

    def outcome(self, body: Mapping[str, Any], job_id: str | None = None) -> Any:
        """The output of a terminal status body, or the typed error of a failed job."""
        status = body.get("status")
        job_id = str(body.get("id") or job_id or "") or None
        if status == "COMPLETED":
            return body.get("output")
        error = body.get("error")
        text = None if error is None else errors.scrub(
            error if isinstance(error, str) else json.dumps(error, default=str), *known_keys()
        )
        summary = _error_summary(text)
        if status == "FAILED":
            return _raise(errors.JobFailed(f"job FAILED: {summary or 'no error text'}",
                                           job_id, self.endpoint_id, None, text))
        if status == "TIMED_OUT":
            return _raise(errors.JobTimedOut("job TIMED_OUT" + (f": {summary}" if summary else ""),
                                             job_id, self.endpoint_id, None, text))
        if status == "CANCELLED":
            return _raise(errors.JobCancelled("job CANCELLED" + (f": {summary}" if summary else ""),
                                              job_id, self.endpoint_id, None, text))
        raise errors.MalformedResponse(f"status {status!r} is not terminal", job_id, self.endpoint_id)


# -- transport failures ----------------------------------------------------------------------


def _raise(exc: BaseException) -> Any:
    raise exc


def _error_summary(text: str | None) -> str:
    """A one-line summary of the endpoint's error text (RunPod sends a JSON string for
    handler exceptions: error_type, error_message, error_traceback, ...)."""
    if not text:
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error_message"):
        kind = str(data.get("error_type", "")).replace("<class '", "").replace("'>", "")
        text = f"{kind}: {data['error_message']}" if kind else str(data["error_message"])
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:_EXCERPT]


def terminal(body: Mapping[str, Any]) -> bool:
    status = body.get("status")
    return isinstance(status, str) and is_terminal(status)


#: RunPod's documented job statuses; RUNNING is documented but unseen (it counts as
#: IN_PROGRESS). Anything else is waited on only for BRIDGE_UNKNOWN_STATUS_TIMEOUT.
KNOWN_STATUSES = frozenset({*(s.value for s in JobStatus), "RUNNING"})


def is_known_status(status: object) -> bool:
    return isinstance(status, str) and status in KNOWN_STATUSES
