"""What a plan knows of an endpoint and of one job (no I/O): the wire, the wait settings, the
endpoint's learned profile (whether it offers long polls, how long its jobs take), a job's
last status body and what each look means for the wait."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

from bridge import errors
from bridge.lifecycle.clocks import WaitClock
from bridge.lifecycle.schedule import EndpointProfile, profiles
from bridge.lifecycle.settings import WaitSettings
from bridge.wire import Wire, terminal

#: Waits shorter than this are answered by the server straight away, so a long poll that
#: came back sooner with the same status means the server does not hold requests.
_EARLY = 0.5


class EndpointState:
    """One endpoint as the lifecycle sees it. ``profile`` is shared by every caller in the
    process that talks to the same endpoint, so what one learns (no long polls here, jobs
    take ~5 s) the others use."""

    def __init__(self, wire: Wire, waits: WaitSettings | None = None) -> None:
        self._wire = wire
        self.endpoint_id = wire.endpoint_id
        self.base_url = wire.base_url
        self.waits = waits or WaitSettings.from_env()
        self.profile: EndpointProfile = profiles.get(self.base_url, self.endpoint_id)
        self._counter = itertools.count()
        self._sent = 0
        #: Requests sent per route (the bench and logs read it).
        self.requests: dict[str, int] = {}
        #: No plugins and no stages listen (a client without ``plugins=True``): the plans
        #: skip their hook, event and stage steps, which would all answer "nothing".
        self.plain = False

    @property
    def wire(self) -> Wire:
        return self._wire

    @property
    def long_poll(self) -> bool | None:
        """None until known; False where /status-sync is missing or long polls are off."""
        if self.waits.poll.long_poll <= 0:
            return False
        return self.profile.long_poll

    @long_poll.setter
    def long_poll(self, value: bool | None) -> None:
        self.profile.long_poll = value

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent to this endpoint object, retries included."""
        return self._sent

    def _count(self, route: str) -> None:
        # next() on itertools.count is atomic under the GIL, unlike ``+= 1``.
        self._sent = next(self._counter) + 1
        self.requests[route] = self.requests.get(route, 0) + 1

    def _new_job(self, job_id: str, body: Mapping[str, Any] | None = None) -> JobState:
        return JobState(self, job_id, body)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint_id!r}, base_url={self.base_url!r})"


class JobState:
    """A job's identity and its last status body (kept once terminal, like the SDK)."""

    def __init__(self, endpoint: EndpointState, job_id: str, body: Mapping[str, Any] | None = None) -> None:
        self._endpoint_base = endpoint
        self.job_id = str(job_id)
        self._last: dict[str, Any] | None = dict(body) if body else None
        #: The status the last look of any kind showed (/stream's too, whose bodies are not
        #: kept: they carry no output); what ``status_changed`` compares with.
        self.seen_status: str | None = self.last_status
        #: When the job was submitted (or first looked at), monotonic: the schedule's origin.
        self.since = time.monotonic()
        #: A plugin's lookup answered: nothing was sent, the job is COMPLETED here only.
        self.from_lookup = False

    @property
    def id(self) -> str:
        return self.job_id

    @property
    def endpoint_id(self) -> str:
        return self._endpoint_base.endpoint_id

    @property
    def last_status(self) -> str | None:
        """The status seen by the last look, without asking the endpoint."""
        return None if self._last is None else self._last.get("status")

    def _remember(self, body: dict[str, Any]) -> dict[str, Any]:
        self._last = body
        self.seen_status = body.get("status")
        return body

    def _final(self) -> dict[str, Any] | None:
        return self._last if self._last is not None and terminal(self._last) else None

    def _forget(self) -> None:
        self._last = None

    def _outcome(self, body: Mapping[str, Any]) -> Any:
        return self._endpoint_base._wire.outcome(body, self.job_id)

    def _timeout(self, clock: WaitClock, note: str = "", status: str | None = None) -> errors.Timeout:
        return self._endpoint_base._wire.timeout_error(self.job_id, clock.timeout, status or self.last_status, note)

    def _should_pause(self, wait: float | None, held: float, before: str | None, body: Mapping[str, Any]) -> bool:
        """After a non-terminal look: pause before the next one? Not after a long poll that
        was held, or that came back early because the status moved."""
        if wait is None or self._endpoint_base.long_poll is False:
            return True
        return held < min(wait, 1.0) * _EARLY and body.get("status") == before

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.job_id!r}, endpoint={self.endpoint_id!r}, status={self.last_status!r})"
