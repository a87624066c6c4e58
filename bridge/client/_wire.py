"""The wire side of the endpoint client, without any I/O: building requests (URLs, headers,
the job request body, payload checks) and turning every HTTP outcome into a value or a
:mod:`bridge.errors` error. This is the ONE place responses become errors; the sync and
asyncio clients only move bytes.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from bridge import __version__, errors
from bridge.config import is_runpod_api, resolve_api_key, resolve_base_url
from bridge.status import JobStatus, is_terminal

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
#: runsync's ``wait`` bounds in ms (RunPod's documented range).
RUNSYNC_WAIT_MIN_MS = 1000
RUNSYNC_WAIT_MAX_MS = 300_000
_EXCERPT = 300
#: Credentials in a URL (``http://user:pass@host``) are cut from any text we repeat.
_USERINFO = re.compile(r"//[^/@\s]+@")
#: Shorter keys are not scrubbed from outputs: they would mangle ordinary text.
MIN_SCRUBBED_KEY = 8
#: What a known key is replaced with in outputs, errors and logs.
MASK = "***"

#: Keys JSON always writes as they are (a key with other characters may appear escaped).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._~+=:-]+")

#: Every API key a Wire was made with in this process (RUNPOD_API_KEY, bridge.api_key, named
#: endpoints' keys), longest first so a key containing another is masked whole.
_known: tuple[str, ...] = ()
_known_bytes: tuple[bytes, ...] = ()
_escapable = False  # some key may appear JSON-escaped in raw answers


def remember_key(key: str | None) -> None:
    """Add ``key`` to the keys :func:`scrub_value` masks (bridge calls this for every key it
    sends; plugins holding other secrets may call it too)."""
    global _known, _known_bytes, _escapable
    if not key or len(key) < MIN_SCRUBBED_KEY or key in _known:
        return
    _known = tuple(sorted({*_known, key}, key=len, reverse=True))
    _known_bytes = tuple(k.encode() for k in _known)
    _escapable = _escapable or not _PLAIN_KEY.fullmatch(key)


def known_keys() -> tuple[str, ...]:
    """The keys bridge masks: every one remembered, and the current default key."""
    remember_key(resolve_api_key())
    return _known


def scrub_value(value: Any, secrets: tuple[str, ...] | None = None) -> Any:
    """``value`` (any JSON value) with every known API key replaced by ``***``, in strings and
    object keys at any depth; the same object when nothing was found (nothing is copied)."""
    found = known_keys() if secrets is None else secrets
    return _scrubbed(value, found) if found else value


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrubbed(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _mask(value, secrets)
    if isinstance(value, dict):
        out, changed = {}, False
        for k, v in value.items():
            k2 = _mask(k, secrets) if isinstance(k, str) else k
            v2 = _scrubbed(v, secrets)
            changed = changed or k2 is not k or v2 is not v
            out[k2] = v2
        return out if changed else value
    if isinstance(value, list):
        items = [_scrubbed(v, secrets) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def _holds_key(raw: bytes) -> bool:
    """Whether a raw JSON answer may contain a known key: a C-speed search, so answers
    without one (nearly all) are never walked."""
    known_keys()
    return _escapable or any(k in raw for k in _known_bytes)


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
    ) -> Call:
        body = encode(request_body(input, webhook, policy, s3_config), RUN_LIMIT, "run", self.endpoint_id)
        headers = {**self.headers, "Idempotency-Key": idempotency_key or new_idempotency_key()}
        return Call("POST", f"{self.prefix}/run", "run", headers, body)

    def runsync(
        self,
        input: Any,
        wait: float,
        webhook: str | None = None,
        policy: Mapping[str, Any] | None = None,
        s3_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Call:
        body = encode(
            request_body(input, webhook, policy, s3_config), RUNSYNC_LIMIT, "runsync", self.endpoint_id
        )
        wait_ms = int(min(RUNSYNC_WAIT_MAX_MS, max(RUNSYNC_WAIT_MIN_MS, wait * 1000)))
        headers = {**self.headers, "Idempotency-Key": idempotency_key or new_idempotency_key()}
        return Call(
            "POST", f"{self.prefix}/runsync?wait={wait_ms}", "runsync", headers, body,
            read_timeout=wait_ms / 1000 + HOLD_MARGIN,
        )

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
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return _USERINFO.sub("//***@", errors.scrub(text.strip(), *known_keys()))[:_EXCERPT]

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
            return scrub_value(body) if _holds_key(raw) else body
        raise self.http_error(call, status_code, headers, raw)

    def http_error(
        self, call: Call, status_code: int, headers: Mapping[str, str], raw: bytes
    ) -> errors.EndpointError:
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

    def transport_error(self, call: Call, exc: BaseException) -> errors.TransportError:
        detail = self._text(f"{type(exc).__name__}: {exc}")
        return errors.TransportError(
            f"{call.method} /{call.route} to {self._text(self.base_url)} failed: {detail}",
            call.job_id, self.endpoint_id,
        )

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
