"""How long to back off: retrying failed requests (:class:`RetryPolicy`) and polling a job
that has not finished (:class:`PollPolicy`), and how long a status outside RunPod's set is
waited on (:class:`UnknownStatusClock`). Shared by the sync and asyncio clients and by the
gateway, which builds its own waiting on these."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from bridge import errors
from bridge.client._wire import KNOWN_STATUSES, is_known_status, known_keys
from bridge.config import unknown_status_timeout

__all__ = ["PollPolicy", "RetryPolicy", "UnknownStatusClock"]

log = logging.getLogger("bridge.client")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one request after 429, 5xx or a connection error.

    ``RetryPolicy(attempts=6, deadline=60.0, base=0.25, factor=2.0, max_backoff=10.0,
    jitter=0.5)``: at most ``attempts`` tries, all started within ``deadline`` seconds of
    the first; the n-th back-off is ``min(max_backoff, base * factor**(n-1))``, of which a
    random fraction up to ``jitter`` is taken off (so many clients don't retry in step). A
    ``Retry-After`` from the server replaces the computed back-off when it is longer.
    ``RetryPolicy.none()`` never retries.
    """

    #: Tries in total, the first included.
    attempts: int = 6
    #: Seconds from the first try after which no retry is started.
    deadline: float = 60.0
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
        delay = min(self.max_backoff, self.base * self.factor ** max(0, retry - 1))
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
        if not isinstance(exc, errors.RETRYABLE) or attempt >= self.attempts:
            return None
        retry_after = getattr(exc, "retry_after", None)
        delay = self.backoff(attempt, retry_after)
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
    ``long_poll=0``) ``/status`` is polled with pauses growing from ``initial`` by
    ``factor`` up to ``max_interval``. Streams are polled the same way but never pause
    longer than ``stream_max_interval``, and go back to ``initial`` after each chunk.
    """

    #: Seconds one long poll may be held by the server; 0 disables long polling.
    long_poll: float = 30.0
    #: First pause between polls, seconds.
    initial: float = 0.2
    #: Growth of the pause per poll.
    factor: float = 1.5
    #: Longest pause between polls.
    max_interval: float = 5.0
    #: Longest pause between two reads of /stream.
    stream_max_interval: float = 1.0


class Waiter:
    """The clock of one wait: the deadline and the next pause. Not shared between waits."""

    def __init__(self, timeout: float | None, poll: PollPolicy, *, stream: bool = False) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        self._poll = poll
        self._max = poll.stream_max_interval if stream else poll.max_interval
        self._interval = poll.initial
        #: A monotonic time the next look must not wait past (an unknown status's limit).
        self.until: float | None = None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _left(self) -> float | None:
        """Seconds the next look may take: to the deadline or ``until``, whichever is first."""
        remaining = self.remaining()
        if self.until is None:
            return remaining
        until = max(0.0, self.until - time.monotonic())
        return until if remaining is None else min(remaining, until)

    def long_poll_wait(self) -> float | None:
        """Seconds to ask the server to hold the next status look; None for a plain look."""
        if self._poll.long_poll <= 0:
            return None
        remaining = self._left()
        wait = self._poll.long_poll if remaining is None else min(self._poll.long_poll, remaining)
        # Under a second the plain /status is as good and RunPod's wait= floor is 1 s.
        return wait if wait >= 1.0 else None

    def next_pause(self) -> float:
        """The pause before the next poll (bounded by the deadline); the one after grows."""
        pause = self._interval
        self._interval = min(self._max, self._interval * self._poll.factor)
        remaining = self._left()
        return pause if remaining is None else min(pause, remaining)

    def reset(self) -> None:
        """Something happened (a chunk arrived): poll promptly again."""
        self._interval = self._poll.initial


class UnknownStatusClock:
    """For one job: how long it has shown a status outside RunPod's documented set.

    Call :meth:`observe` with every status seen while waiting. The first unknown status is
    logged once (WARNING, with the job id); when unknown statuses have lasted ``limit``
    seconds (``BRIDGE_UNKNOWN_STATUS_TIMEOUT``, read when the clock is made) with no known
    one in between, it raises :class:`bridge.errors.UnknownStatus`. A known status stops
    the clock; a later unknown one starts it again (without another log line).
    """

    def __init__(self, job_id: str, endpoint_id: str | None = None, limit: float | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.job_id = job_id
        self.endpoint_id = endpoint_id
        self.limit = unknown_status_timeout() if limit is None else float(limit)
        #: Monotonic time the current run of unknown statuses began; None while known.
        self.since: float | None = None
        self.logged = False
        self._log = logger or log

    def observe(self, status: object) -> None:
        if is_known_status(status):
            self.since = None
            return
        now = time.monotonic()
        if self.since is None:
            self.since = now
        shown = errors.scrub(repr(status), *known_keys())[:100]  # text from outside: no keys, bounded
        if not self.logged:
            self.logged = True
            self._log.warning(
                "job %s (endpoint %s) reports status %s, which is not one of RunPod's (%s); "
                "still waiting, for at most %g s (BRIDGE_UNKNOWN_STATUS_TIMEOUT)",
                self.job_id, self.endpoint_id, shown, ", ".join(sorted(KNOWN_STATUSES)), self.limit,
            )
        if now - self.since >= self.limit:
            raise errors.UnknownStatus(
                f"the job reported status {shown}, which is not one of RunPod's, for {self.limit:g} s; "
                "stopped waiting (the job was not cancelled)",
                self.job_id, self.endpoint_id, None, None,
                errors.scrub(str(status), *known_keys())[:100], self.limit,
            )

    def deadline(self) -> float | None:
        """The monotonic time :meth:`observe` will raise at, while the status is unknown."""
        return None if self.since is None else self.since + self.limit
