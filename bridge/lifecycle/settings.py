"""Waiting and retrying, one set of knobs for every caller (docs/settings.md lists them).

:class:`WaitSettings` is the one settings object: how a job is waited for
(:class:`PollPolicy`), how a failed request is retried (:class:`RetryPolicy`), how long
status looks may keep failing, and whether the wait schedule learns from earlier jobs. The
defaults are the gateway's long-standing values and are the same for the Celery tasks,
``bridge batch``, ``bridge run`` and the clients; :meth:`WaitSettings.from_env` reads the
``BRIDGE_*`` variables, when called (never at import).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from dataclasses import dataclass, field

from bridge import errors
from bridge.config import env_float, env_int

__all__ = ["PollPolicy", "RetryPolicy", "WaitSettings"]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one request after 429, 5xx or a connection error.

    At most ``attempts`` tries (0: no limit but the deadline), all started within
    ``deadline`` seconds of the first; the n-th back-off is ``min(max_backoff,
    base * factor**(n-1))``, of which a random fraction up to ``jitter`` is taken off (so
    many clients don't retry in step). A ``Retry-After`` from the server replaces the
    computed back-off when it is longer. ``RetryPolicy.none()`` never retries.
    """

    #: Tries in total, the first included (BRIDGE_SUBMIT_ATTEMPTS); 0 = bounded by the deadline only.
    attempts: int = 8
    #: Seconds from the first try after which no retry is started (BRIDGE_RETRY_DEADLINE).
    deadline: float = 120.0
    #: First back-off in seconds.
    base: float = 0.25
    #: Growth of the back-off per retry.
    factor: float = 2.0
    #: Longest single back-off (a longer Retry-After is still honoured within the deadline).
    max_backoff: float = 10.0
    #: Fraction of each back-off taken off at random, 0..1.
    jitter: float = 0.5

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(attempts=1)

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        delay = min(self.max_backoff, self.base * self.factor ** max(0, min(retry - 1, 64)))
        delay -= delay * self.jitter * random.random()
        if retry_after is not None and retry_after > delay:
            # The server said when; add a little spread so a crowd does not return at once.
            delay = retry_after + min(1.0, retry_after * 0.1) * random.random()
        return max(0.0, delay)

    def next_delay(
        self, attempt: int, exc: BaseException, started: float, deadline: float | None = None
    ) -> float | None:
        """The pause before trying again after ``attempt`` tries failed with ``exc``, or None
        to give up. ``started`` is the monotonic time of the first try; ``deadline`` an
        absolute monotonic time from the caller that also bounds the retries."""
        if not isinstance(exc, errors.RETRYABLE) or (self.attempts and attempt >= self.attempts):
            return None
        delay = self.backoff(attempt, getattr(exc, "retry_after", None))
        end = started + self.deadline
        if deadline is not None:
            end = min(end, deadline)
        if time.monotonic() + delay > end:
            return None
        return delay


@dataclass(frozen=True)
class PollPolicy:
    """How a job is waited for.

    Where the endpoint offers ``GET /status-sync/{id}?wait=ms`` one request is held open for
    up to ``long_poll`` seconds and returns the moment the job ends. Otherwise (or with
    ``long_poll=0``) ``/status`` is polled on a schedule learned from the endpoint's earlier
    jobs (:mod:`bridge.lifecycle.schedule`); until it has learned, pauses grow from
    ``initial`` by ``factor`` up to ``max_interval``. ``/stream`` is read with pauses from
    ``stream_initial`` up to ``stream_max_interval``, back to ``stream_initial`` after each chunk.
    """

    #: Seconds one long poll may be held by the server (BRIDGE_LONG_POLL); 0 disables long polls.
    long_poll: float = 20.0
    #: First pause between plain polls, seconds (BRIDGE_POLL_INTERVAL).
    initial: float = 0.5
    #: Growth of the pause per poll.
    factor: float = 1.5
    #: Longest pause between polls (BRIDGE_POLL_MAX_INTERVAL).
    max_interval: float = 10.0
    #: First pause between two reads of /stream (BRIDGE_STREAM_POLL_INTERVAL).
    stream_initial: float = 0.2
    #: Longest pause between two reads of /stream (BRIDGE_STREAM_MAX_INTERVAL).
    stream_max_interval: float = 2.0


@dataclass(frozen=True)
class WaitSettings:
    """Everything about waiting and retrying; one object, one set of defaults."""

    poll: PollPolicy = field(default_factory=PollPolicy)
    #: Retries of every request but status looks (submit, cancel, purge, health, retry).
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: How long status looks may keep failing transiently before the wait fails
    #: (BRIDGE_POLL_ERROR_DEADLINE); their back-off is ``retry``'s, capped at ``poll.max_interval``.
    look_error_deadline: float = 300.0
    #: Learn a per-endpoint wait schedule from earlier jobs' durations (BRIDGE_LEARN_WAITS).
    learn: bool = True

    @classmethod
    def from_env(cls) -> WaitSettings:
        """The defaults, overridden by whichever ``BRIDGE_*`` variables are set."""
        d = cls()
        poll = PollPolicy(
            long_poll=env_float("BRIDGE_LONG_POLL", d.poll.long_poll),
            initial=env_float("BRIDGE_POLL_INTERVAL", d.poll.initial),
            factor=d.poll.factor,
            max_interval=env_float("BRIDGE_POLL_MAX_INTERVAL", d.poll.max_interval),
            stream_initial=env_float("BRIDGE_STREAM_POLL_INTERVAL", d.poll.stream_initial),
            stream_max_interval=env_float("BRIDGE_STREAM_MAX_INTERVAL", d.poll.stream_max_interval),
        )
        retry = dataclasses.replace(
            d.retry,
            attempts=env_int("BRIDGE_SUBMIT_ATTEMPTS", d.retry.attempts),
            deadline=env_float("BRIDGE_RETRY_DEADLINE", d.retry.deadline),
        )
        return cls(poll=poll, retry=retry,
                   look_error_deadline=env_float("BRIDGE_POLL_ERROR_DEADLINE", d.look_error_deadline),
                   learn=env_int("BRIDGE_LEARN_WAITS", 1) != 0)

    def replace(self, *, poll: PollPolicy | None = None, retry: RetryPolicy | None = None) -> WaitSettings:
        return dataclasses.replace(self, poll=poll or self.poll, retry=retry or self.retry)

    @functools.cached_property
    def look_retry(self) -> RetryPolicy:
        """How a failing status look is retried: until ``look_error_deadline``, backing off
        to at most the longest poll pause."""
        return dataclasses.replace(self.retry, attempts=0, deadline=self.look_error_deadline,
                                   max_backoff=max(self.poll.max_interval, self.retry.base))
