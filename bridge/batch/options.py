"""A batch's options, checked before anything is sent.

One endpoint-wide mistake in an option (a policy that is not an object, a webhook that is not
a URL) would otherwise fail every input the same way; :meth:`Options.validate` turns it into
one :class:`~bridge.errors.ConfigurationError` up front (the CLI's exit code 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from bridge import errors
from bridge.batch.admission import Rate


@dataclass
class Options:
    """Everything that shapes a batch run besides its inputs."""

    concurrency: int = 200
    max_queue_depth: int | None = None
    run_rate: Rate | None = None
    cancel_rate: Rate | None = None
    policy: dict[str, Any] | None = None
    #: Retries of one submission after 5xx/connection errors (429s are retried without limit,
    #: paced by the Pacer, because they only mean "later").
    submit_attempts: int = 8
    api_key: str | None = None
    base_url: str | None = None
    #: On a resume, run again the inputs the endpoint itself FAILED (or TIMED_OUT).
    retry_failed: bool = False
    #: Seconds each job may take before bridge cancels it and records errors.Timeout.
    timeout: float | None = None
    #: Read each job's /stream: its output is the list of chunks (transformed by the plugins).
    stream: bool = False

    def validate(self) -> Options:
        """Raise ConfigurationError for an option no input could run with; returns self."""
        check_positive(self.concurrency, "concurrency", "--concurrency")
        if self.max_queue_depth is not None:
            check_positive(self.max_queue_depth, "max_queue_depth", "--max-queue-depth")
        check_policy(self.policy)
        if self.base_url is not None:
            check_url(self.base_url, "base_url", "--base-url or RUNPOD_ENDPOINT_BASE_URL, e.g. http://127.0.0.1:8000/v2")
        return self


def check_positive(value: Any, name: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.ConfigurationError(f"{name} must be a whole number of at least 1, not {value!r}", None, None,
                                        where)


def check_policy(policy: Any) -> None:
    """A job policy is a JSON object (``{"executionTimeout": 60000, "ttl": ...}``) or None."""
    if policy is not None and not isinstance(policy, dict):
        raise errors.ConfigurationError(
            f"the job policy must be a JSON object, not {type(policy).__name__} {policy!r:.60}", None, None,
            """--policy / policy=, e.g. '{"executionTimeout": 60000}'""",
        )


def check_url(url: Any, name: str, hint: str) -> None:
    """An absolute http(s) URL with a host."""
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise errors.ConfigurationError(f"{name} {url!r:.80} is not an http(s) URL", None, None, hint)


__all__ = ["Options", "check_policy", "check_positive", "check_url"]
