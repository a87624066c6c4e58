"""When to look at a job's status on an endpoint without long polls: a schedule learned per
endpoint from the durations of its earlier jobs.

Pure and fast: no I/O, no clock of its own (callers pass the seconds elapsed), no asyncio.

Each endpoint (base URL + endpoint id) has one :class:`EndpointProfile` in the
process-wide :data:`profiles`. It remembers whether ``/status-sync`` exists (``long_poll``)
and the durations of the last :data:`MEMORY` jobs it saw end (submit to end, from the
terminal body's ``delayTime + executionTime``), recent ones weighing more (a weight halves
every :data:`HALF_LIFE` ends). Every wait gets a :class:`JobSchedule` from it; the waits
still running count as "lasted at least this long" (a Kaplan-Meier estimate), so the ends
of a burst, which come shortest first, are not taken for an endpoint of short jobs.

Until :data:`MIN_SAMPLES` durations are known a schedule backs off as bridge always did:
``poll.initial``, times ``poll.factor``, up to ``poll.max_interval``. After that each look
comes at the latest time ``s`` for which the expected lateness of noticing the end at
``s`` (over the durations still possible, i.e. longer than the elapsed time) stays within
a budget (:data:`LATENESS_BUDGET` s or :data:`LATENESS_SHARE` of the duration, whichever
is larger): where no job ends (before the shortest duration seen, between two modes) the
schedule jumps ahead, where many end it looks often (the look-cost vs lateness balance
of optimal inspection, pause ~ 1/sqrt(hazard)). A look also comes at most
:func:`lateness_cap` after the earliest end still possible (so durations spread widely
are noticed no later than by a fixed 1 s poll), and no later than just past the longest
duration seen. A job that outlives every duration seen keeps that pace while many others
still run past it too, else backs off again from ``poll.initial``. Ten ends in a row far
outside the usual range mean the endpoint's jobs changed: the old durations then weigh a
fifth as much (:data:`DRIFT_RUN`, :data:`DRIFT_FADE`). Every pause is at least :data:`MIN_PAUSE` and at most
``poll.max_interval`` (stretched by at most :data:`CAP_SLACK` when that lands the look on
the predicted end instead of one more look just before it).

Callers: on an endpoint known to have no long polls, ask ``next_delay(0.0, None)`` before
the first look too; a look right after submit is wasted on all but the shortest jobs, and
the goals below count it.

Measured by simulation (tests/lifecycle/test_schedule.py) and against the local endpoint
without long polls (``python -m bench.waiting``). Goals (issue 10): jobs of 5 s +- 10 %:
<= 2 looks per job, completion noticed <= 250 ms after it happened (p50); durations spread
uniformly over 0.5-30 s: no more looks and no later notice than the official SDK's fixed
1 s poll; a 30 s job: <= 3 looks.
"""

from __future__ import annotations

import bisect
import math
import threading
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["EndpointProfile", "JobSchedule", "Profiles", "profiles"]

#: Durations remembered per endpoint (enough to span a burst of hundreds of jobs, whose
#: ends arrive shortest first).
MEMORY = 1000
#: Durations needed before the learned schedule replaces the back-off.
MIN_SAMPLES = 20
#: A duration's weight halves every this many newer durations (drift: recent ones count more).
HALF_LIFE = 100.0
#: Expected lateness one look may cost: the larger of this many seconds and
#: :data:`LATENESS_SHARE` of the next duration seen. Larger: fewer looks, later notice.
LATENESS_BUDGET = 0.1
LATENESS_SHARE = 0.02
#: No two looks closer than this (seconds).
MIN_PAUSE = 0.2
#: A pause may exceed ``max_interval`` by this factor to land on the predicted end
#: (3 pauses of 10 s end just before a 30 s job does; 10.2 s ones do not).
CAP_SLACK = 1.05
#: Past the longest duration seen, looks keep the lateness cap's pace while at least this
#: share of jobs is estimated to run longer still; below it they back off.
PACED_TAIL = 0.05
#: This many ends in a row far outside the usual range, on one side: the endpoint's jobs
#: changed (a burst's ends come shortest first, but 10 in a row that far out is rare even
#: among hundreds). The last ARCHIVE durations seen before are kept aside and weigh
#: DRIFT_FADE as much from then on (an endpoint whose jobs alternate keeps both).
DRIFT_RUN = 10
DRIFT_FADE = 0.02
#: Durations kept per earlier regime (two regimes back at most).
ARCHIVE = 200
#: The snapshot is remade at least every this many schedules computed: it counts the running
#: waits as "lasted at least this long", and they grow older without any end being seen.
LOOKS_PER_REMAKE = 256
#: Statuses whose durations are learned (a job cancelled by someone says nothing of its length).
_LEARNED = frozenset({"COMPLETED", "FAILED", "TIMED_OUT"})


class PollLike(Protocol):
    """What a schedule reads of a poll policy (``bridge.lifecycle.settings.PollPolicy``)."""

    @property
    def initial(self) -> float: ...
    @property
    def factor(self) -> float: ...
    @property
    def max_interval(self) -> float: ...
    @property
    def stream_max_interval(self) -> float: ...


def lateness_cap(elapsed: float) -> float:
    """The longest a look may come after the earliest end still possible: 0.95 s for jobs of
    seconds (so spread durations are noticed no later than by a fixed 1 s poll, with fewer
    looks), 3 % of the elapsed time for longer ones."""
    return max(0.95, 0.03 * elapsed)


class _Learned:
    """An immutable snapshot of an endpoint's durations: sorted, each with its probability
    mass, and suffix sums for the schedule's searches.

    The masses are a weighted Kaplan-Meier estimate: jobs still being waited for count as
    "lasted at least this long" (censored), so a burst whose short jobs ended first is not
    mistaken for an endpoint of short jobs; ``tail`` is the mass beyond the longest
    duration seen (jobs still running past it)."""

    __slots__ = ("chance_gap", "exec_low", "recent", "usual", "tail", "values", "weight_above", "wvalue_above",
                 "weights")

    def __init__(self, samples: list[tuple[float, float, bool]], executions: list[float],
                 censored: list[float]) -> None:
        # samples: (duration, weight, of the current regime)
        n = len(samples)
        pairs = sorted((d, w) for d, w, _ in samples)
        self.values = [d for d, _ in pairs]
        # At risk at v: the ended jobs that lasted >= v, plus the running ones seen alive at >= v
        # (weight 1: they are the newest).
        censored = sorted(censored)
        at_risk_ended = sum(w for _, w in pairs)
        survival = 1.0
        self.weights = []
        for v, w in pairs:
            at_risk = at_risk_ended + (len(censored) - bisect.bisect_left(censored, v))
            mass = survival * w / at_risk
            self.weights.append(mass)
            survival -= mass
            at_risk_ended -= w
        self.tail = max(0.0, survival)
        # weight_above[i] = mass of values[i:] plus the tail, wvalue_above of mass*value
        self.weight_above = [0.0] * (n + 1)
        self.wvalue_above = [0.0] * (n + 1)
        self.weight_above[n] = self.tail
        for i in range(n - 1, -1, -1):
            self.weight_above[i] = self.weight_above[i + 1] + self.weights[i]
            self.wvalue_above[i] = self.wvalue_above[i + 1] + self.weights[i] * self.values[i]
        # The durations of the current regime (since the endpoint's jobs last changed): where
        # ends are expected now, for the lateness cap.
        self.recent = sorted(d for d, _, current in samples if current) or self.values
        # A gap this wide between neighbouring durations can be chance (4 mean spacings).
        self.chance_gap = 4 * (self.recent[-1] - self.recent[0]) / max(1, len(self.recent) - 1)
        # The usual range: from the 0.5 % to the 99.5 % quantile, widened by half that span on
        # each side (no upper end while jobs run past the longest seen). Runs of ends outside
        # it mean the endpoint changed.
        low, high = self.quantile(0.005), self.quantile(0.995)
        slack = 0.5 * (high - low)  # what was seen is a sample: ends a little outside are no change
        self.usual = (low - slack, high + slack if self.tail == 0 else math.inf)
        # A job still queued cannot end sooner than (about) the shortest run time seen.
        ordered = sorted(executions)
        self.exec_low = ordered[len(ordered) // 20] if ordered else 0.0

    def quantile(self, q: float) -> float:
        """The duration below which ``q`` of the mass lies."""
        total = self.weight_above[0]
        i = bisect.bisect_left([total - w for w in self.weight_above[1:]], q * total)
        return self.values[min(i, len(self.values) - 1)]

    def real_gap(self, i: int, cap: float) -> bool:
        """Whether nothing ends between ``recent[i - 1]`` (or 0) and ``recent[i]``: the gap is
        wider than twice the lateness cap, than 4 mean spacings of all durations, and than 8
        spacings of its neighbours (sparse because few ended there yet, or a real hole)."""
        values = self.recent
        gap = values[i] - (values[i - 1] if i > 0 else 0.0)
        if gap <= max(2 * cap, self.chance_gap):
            return False
        right = min(len(values) - 1, i + 3)
        local = (values[right] - values[i]) / (right - i) if right > i else 0.0
        if i > 0:
            left = max(0, i - 4)
            if i - 1 > left:
                local = max(local, (values[i - 1] - values[left]) / (i - 1 - left))
        return gap > 8 * local

    def margin(self) -> float:
        """Slack past the longest duration seen: the unseen tail of the distribution."""
        spread = self.values[-1] - self.values[0]
        return 0.02 + 0.05 * spread

    def next_look(self, elapsed: float) -> float | None:
        """The time (seconds since submit) of the next look, or None when the job has
        outlived every duration seen."""
        values = self.values
        first = bisect.bisect_right(values, elapsed)
        if first == len(values):
            return None
        alive = self.weight_above[first]  # mass of the durations longer than elapsed
        budget = max(LATENESS_BUDGET, LATENESS_SHARE * values[first]) * alive
        # Looking at s costs sum w_i (s - v_i) over first <= i with v_i <= s, over ``alive``.
        # That cost at s = values[k] grows with k: find the last k where it is within the
        # budget (binary search on the suffix sums), then solve for s on its segment.
        lo, hi = first, len(values) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            weight = alive - self.weight_above[mid]
            cost = values[mid] * weight - (self.wvalue_above[first] - self.wvalue_above[mid])
            if cost <= budget:
                lo = mid
            else:
                hi = mid - 1
        weight = alive - self.weight_above[lo + 1]
        look = (budget + self.wvalue_above[first] - self.wvalue_above[lo + 1]) / weight
        # The earliest end still possible: the next duration seen, when the gap up to it (from
        # the one before, or from 0) is a real one where nothing ends (before the shortest
        # duration, between two modes); else now (a gap between few samples is chance).
        # Durations of an earlier regime (faded) do not count here: their ends are unlikely now.
        cap = lateness_cap(elapsed)
        j = bisect.bisect_right(self.recent, elapsed)
        if j < len(self.recent):
            earliest = self.recent[j] if self.real_gap(j, cap) else elapsed
            look = min(look, earliest + cap)
        look = min(look, values[-1] + self.margin())
        return max(look, elapsed + MIN_PAUSE)


class EndpointProfile:
    """What is known of one endpoint: whether it has long polls, and its jobs' durations."""

    def __init__(self, memory: int | None = None) -> None:
        memory = MEMORY if memory is None else memory
        #: None = not known yet; False = /status-sync is missing (remembered, never asked again).
        self.long_poll: bool | None = None
        self._durations: deque[float] = deque(maxlen=memory)  # of the current regime
        self._epoch = 0  # the current regime (one more each time the endpoint's jobs changed)
        #: (duration, regime, age within it): a sample of earlier regimes' durations.
        self._archive: deque[tuple[float, int, int]] = deque(maxlen=ARCHIVE * 2)
        self._executions: deque[float] = deque(maxlen=memory)
        self._lock = threading.Lock()
        self._learned: _Learned | None = None  # cached snapshot
        self._fresh = 0  # durations observed since the snapshot was made
        self._looks = 0  # schedules computed since (the running waits it knows grow older)
        self._outside = 0  # ends in a row below (negative) or above the usual range
        self._usual = (0.0, math.inf)  # that range, as it was when the run began
        #: The waits in progress (their elapsed time is what the snapshot knows of running jobs).
        self._waits: weakref.WeakSet[JobSchedule] = weakref.WeakSet()

    def observe(self, body: Mapping[str, Any], waited: float) -> None:
        """Learn from a terminal status ``body`` noticed ``waited`` seconds after submit.

        The duration is the endpoint's own ``delayTime + executionTime`` (ms) when the body
        has them (not biased by how late we noticed), else ``waited``. CANCELLED jobs and
        non-terminal bodies teach nothing."""
        if body.get("status") not in _LEARNED:
            return
        delay, execution = _ms(body.get("delayTime")), _ms(body.get("executionTime"))
        duration = delay + execution if delay is not None and execution is not None else waited
        if not math.isfinite(duration) or duration < 0:
            return
        with self._lock:
            self._durations.append(duration)
            if execution is not None:
                self._executions.append(execution)
            self._fresh += 1
            self._watch_drift(duration)

    def _watch_drift(self, duration: float) -> None:
        """DRIFT_RUN ends in a row outside the usual range, all on one side: the endpoint's
        jobs changed (a new model, other inputs). Keep only those and learn anew."""
        if self._learned is None:
            return
        # Judged against the range before the run began (the snapshot learns the run itself).
        low, high = self._usual if self._outside else self._learned.usual
        side = -1 if duration < low else 1 if duration > high else 0
        if duration < self._learned.usual[0]:
            self._fresh = len(self._durations)  # shorter than ever: look for such ends at once
        if side == 0 or self._outside * side < 0:
            self._outside = side
            self._usual = self._learned.usual
        else:
            self._outside += side
        if abs(self._outside) >= DRIFT_RUN:
            # The run that showed it starts the new regime; the newest durations of the old
            # one are kept aside (it may come back), weighing DRIFT_FADE from now on.
            earlier = list(self._durations)[:-DRIFT_RUN]
            kept = earlier[-ARCHIVE:]
            self._archive.extend((d, self._epoch, len(kept) - 1 - i) for i, d in enumerate(kept))
            for _ in range(len(self._durations) - DRIFT_RUN):
                self._durations.popleft()
            self._epoch += 1
            self._learned, self._fresh, self._outside = None, 0, 0

    @property
    def changes(self) -> int:
        """How many times the endpoint's jobs were seen to change (runs of unusual ends)."""
        return self._epoch

    @property
    def samples(self) -> int:
        """How many durations are remembered (earlier regimes' included)."""
        return len(self._durations) + len(self._archive)

    def learned(self) -> _Learned | None:
        """The current snapshot, or None while fewer than MIN_SAMPLES durations are known.
        It is remade once 1/64 of the memory is new (not on every end: at hundreds of
        ends a second that would cost more than the looks it saves)."""
        with self._lock:
            count = len(self._durations) + len(self._archive)
            if count < MIN_SAMPLES:
                return None
            if self._learned is None or self._fresh > count // 64 or self._looks > LOOKS_PER_REMAKE:
                decay = 0.5 ** (1.0 / HALF_LIFE)
                n = len(self._durations)
                samples = [(d, decay ** (n - 1 - i), True) for i, d in enumerate(self._durations)]
                samples += [(d, DRIFT_FADE ** (self._epoch - e) * decay ** age, False)
                            for d, e, age in self._archive]
                running = [w.elapsed for w in list(self._waits) if w.elapsed > 0]
                self._learned = _Learned(samples, list(self._executions), running)
                self._fresh = self._looks = 0
            self._looks += 1
            return self._learned

    def schedule(self, poll: PollLike, *, stream: bool = False) -> JobSchedule:
        """A schedule for one wait (``stream``: reads of /stream, which only back off)."""
        schedule = JobSchedule(self, poll, stream=stream)
        if not stream:
            with self._lock:
                self._waits.add(schedule)
        return schedule


class JobSchedule:
    """The pauses of one wait. Not shared between waits."""

    def __init__(self, profile: EndpointProfile, poll: PollLike, *, stream: bool = False) -> None:
        self._profile = profile
        self._initial = poll.initial
        self._factor = poll.factor
        self._cap = poll.stream_max_interval if stream else poll.max_interval
        if stream:
            self._initial = getattr(poll, "stream_initial", poll.initial)
        self._stream = stream
        self._interval = self._initial  # the back-off's next pause
        self._overdue = False  # past every learned duration: backing off again
        #: Seconds since submit at the last look (the job was still running then).
        self.elapsed = 0.0

    def next_delay(self, elapsed: float, status: str | None) -> float:
        """Seconds to pause before the next plain /status look, ``elapsed`` seconds after
        submit (or after the wait began, for a resumed job), ``status`` the last one seen."""
        elapsed = self.elapsed = max(0.0, elapsed)
        learned = None if self._stream else self._profile.learned()
        if learned is not None:
            look = learned.next_look(elapsed)
            if look is not None:
                self._overdue = False
                self._interval = self._initial
                if status == "IN_QUEUE":  # not started: it cannot end before a run's length
                    look = max(look, elapsed + learned.exec_low)
                return self._bounded(elapsed, look)
            if learned.tail >= PACED_TAIL:
                # Past every duration seen, but many jobs are still running past it (a burst
                # whose long jobs have not ended yet): keep the pace of the lateness cap.
                return min(self._cap, lateness_cap(elapsed))
            if not self._overdue:  # outlived every duration seen: back off from the start
                self._overdue = True
                self._interval = max(MIN_PAUSE, min(self._initial, 0.1 * elapsed))
        pause = self._interval
        self._interval = min(self._cap, self._interval * self._factor)
        return max(MIN_PAUSE, min(pause, self._cap))

    def _bounded(self, elapsed: float, look: float) -> float:
        pause = look - elapsed
        if pause > self._cap:
            # Spread the way to the look over the fewest pauses within the cap (with slack):
            # the last one lands on the look instead of one more look just before it.
            steps = math.ceil(pause / (self._cap * CAP_SLACK))
            pause = pause / steps
        return max(MIN_PAUSE, pause)

    def reset(self) -> None:
        """A stream chunk arrived: look again promptly."""
        self._interval = self._initial
        self._overdue = False


def _ms(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value) / 1000.0


class Profiles:
    """The process-wide registry of endpoint profiles, by (base URL, endpoint id)."""

    #: Endpoints remembered; the least recently used one is forgotten past this.
    LIMIT = 4096

    def __init__(self) -> None:
        self._profiles: dict[tuple[str, str], EndpointProfile] = {}
        self._lock = threading.Lock()

    def get(self, base_url: str, endpoint_id: str) -> EndpointProfile:
        key = (base_url.rstrip("/"), endpoint_id)
        with self._lock:
            profile = self._profiles.pop(key, None)
            if profile is None:
                profile = EndpointProfile()
                if len(self._profiles) >= self.LIMIT:
                    self._profiles.pop(next(iter(self._profiles)))
            self._profiles[key] = profile  # most recently used last
            return profile

    def clear(self) -> None:
        """Forget every endpoint (tests)."""
        with self._lock:
            self._profiles.clear()


#: The registry every waiter in this process shares.
profiles = Profiles()
