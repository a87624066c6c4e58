"""The clocks of one wait: its deadline and pauses (:class:`WaitClock`), and how long a
status outside RunPod's set has lasted (:class:`UnknownStatusClock`)."""

from __future__ import annotations

import logging
import time

from bridge import errors
from bridge.config import unknown_status_timeout
from bridge.lifecycle.schedule import JobSchedule  # noqa: TC001 (helper S)
from bridge.lifecycle.settings import PollPolicy
from bridge.wire import KNOWN_STATUSES, is_known_status, known_keys

__all__ = ["UnknownStatusClock", "WaitClock"]

log = logging.getLogger("bridge.lifecycle")


class WaitClock:
    """The deadline and the next pause of one wait. Not shared between waits.

    Plain status looks pause as ``schedule`` says (learned per endpoint); stream reads back
    off from ``poll.stream_initial`` to ``poll.stream_max_interval``."""

    def __init__(self, timeout: float | None, poll: PollPolicy, *, stream: bool = False,
                 schedule: JobSchedule | None = None, deadline: float | None = None) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if deadline is not None:
            self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)
        self.started = time.monotonic()
        self._poll = poll
        self._stream = stream
        self._schedule = schedule
        self._interval = poll.stream_initial if stream else poll.initial
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

    def next_pause(self, status: str | None = None) -> float:
        """The pause before the next look (bounded by the deadline)."""
        if self._schedule is not None and not self._stream:
            pause = self._schedule.next_delay(time.monotonic() - self.started, status)
        else:
            pause = self._interval
            cap = self._poll.stream_max_interval if self._stream else self._poll.max_interval
            self._interval = min(cap, self._interval * self._poll.factor)
        remaining = self._left()
        return pause if remaining is None else min(pause, remaining)

    def reset(self) -> None:
        """Something happened (a chunk arrived): poll promptly again."""
        self._interval = self._poll.stream_initial if self._stream else self._poll.initial
        if self._schedule is not None:
            self._schedule.reset()


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
