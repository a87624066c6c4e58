"""The learned wait schedule (bridge.lifecycle.schedule), checked with a deterministic
simulator: jobs of known durations are waited for on simulated time, counting status looks
and how late each end is noticed. These test the algorithm's behaviour (looks per job,
lateness in simulated seconds), not the speed of any code."""

from __future__ import annotations

import heapq
import random
import statistics
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from bridge.lifecycle import schedule as sched
from bridge.lifecycle.schedule import CAP_SLACK, MIN_PAUSE, MIN_SAMPLES, EndpointProfile, Profiles


@dataclass(frozen=True)
class Poll:
    """The gateway's poll settings (the lead's PollPolicy has these fields)."""

    initial: float = 0.5
    factor: float = 1.5
    max_interval: float = 10.0
    stream_initial: float = 0.2
    stream_max_interval: float = 2.0


POLL = Poll()


@dataclass
class Result:
    looks: list[int]
    lateness: list[float]
    pauses: list[float]

    def after(self, skip: int) -> Result:
        return Result(self.looks[skip:], self.lateness[skip:], self.pauses)

    @property
    def looks_per_job(self) -> float:
        return statistics.mean(self.looks)

    def late(self, q: float) -> float:
        ordered = sorted(self.lateness)
        return ordered[round(q * (len(ordered) - 1))]


def body(duration: float, status: str = "COMPLETED", queued: float = 0.0) -> dict[str, Any]:
    return {"status": status, "delayTime": round(queued * 1000), "executionTime": round((duration - queued) * 1000)}


def simulate(durations: list[float], *, at_once: int = 1, profile: EndpointProfile | None = None,
             poll: Poll = POLL) -> Result:
    """Wait for every job, ``at_once`` at a time (a job starts when another's end was
    noticed), on simulated time. Each wait asks its schedule for a pause before every look,
    the first one included; every end noticed teaches the shared profile at once. Results
    are in submission order."""
    profile = profile or EndpointProfile()
    pending = iter(enumerate(durations))
    waits: list[tuple[float, float, int, Any, float, int]] = []  # (look at, started, i, schedule, end, looks)
    looks: dict[int, tuple[int, float]] = {}
    pauses: list[float] = []

    def start(now: float) -> None:
        for i, end in pending:
            schedule = profile.schedule(poll)
            pause = schedule.next_delay(0.0, None)
            pauses.append(pause)
            heapq.heappush(waits, (now + pause, now, i, schedule, end, 1))
            return

    for _ in range(at_once):
        start(0.0)
    while waits:
        now, started, i, schedule, end, n = heapq.heappop(waits)
        elapsed = now - started
        if elapsed >= end:
            looks[i] = (n, elapsed - end)
            profile.observe(body(end), elapsed)
            del schedule
            start(now)
            continue
        pause = schedule.next_delay(elapsed, "IN_PROGRESS")
        pauses.append(pause)
        heapq.heappush(waits, (now + pause, started, i, schedule, end, n + 1))
    ordered = [looks[i] for i in range(len(durations))]
    return Result([n for n, _ in ordered], [late for _, late in ordered], pauses)


def warmed(durations: list[float], at_once: int) -> Result:
    """As the benchmark runs: the first 20 jobs at once, then the rest ``at_once`` at a time;
    the result of the rest."""
    profile = EndpointProfile()
    simulate(durations[:MIN_SAMPLES], at_once=MIN_SAMPLES, profile=profile)
    return simulate(durations[MIN_SAMPLES:], at_once=at_once, profile=profile)


def sdk(durations: list[float]) -> Result:
    """The official SDK's AsyncioJob.output(): a look at once, then every 1 s until the job
    ended, then one more fetch of the output (runpod 1.12.0, asyncio_runner.py)."""
    result = Result([], [], [])
    for end in durations:
        t, looks = 0.0, 1
        while t < end:
            t += 1.0
            looks += 1
        result.looks.append(looks + 1)
        result.lateness.append(t - end)
    return result


def durations(kind: str, n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    if kind == "steady":
        return [rng.uniform(4.5, 5.5) for _ in range(n)]
    if kind == "spread":
        return [rng.uniform(0.5, 30.0) for _ in range(n)]
    if kind == "30s":  # a 30 s handler: the end comes a few ms after 30 s
        return [30.0 + rng.uniform(0.0, 0.05) for _ in range(n)]
    if kind == "10s":
        return [10.0 + rng.uniform(0.0, 0.05) for _ in range(n)]
    raise ValueError(kind)


# -- the goals ------------------------------------------------------------------------------


@pytest.mark.parametrize("at_once", [1, 500])
def test_steady_jobs_two_looks_and_noticed_within_250_ms(at_once):
    jobs = durations("steady", 1020)
    learned = warmed(jobs, at_once)
    assert learned.looks_per_job <= 2.0
    assert learned.late(0.5) <= 0.25
    # today's back-off, for contrast: jobs waited for before 20 ends were seen look 5 times
    # and notice the end over a second late
    cold = simulate(jobs[:MIN_SAMPLES], at_once=MIN_SAMPLES)
    assert cold.looks_per_job >= 5 and cold.late(0.5) > 1.0


@pytest.mark.parametrize("at_once", [1, 500])
def test_spread_jobs_no_more_looks_and_no_later_than_a_fixed_one_second_poll(at_once):
    jobs = durations("spread", 1020)
    learned = warmed(jobs, at_once)
    baseline = sdk(jobs[MIN_SAMPLES:])
    assert learned.looks_per_job < baseline.looks_per_job
    assert learned.late(0.5) <= baseline.late(0.5)
    assert learned.late(0.9) <= baseline.late(0.9)


def test_spread_jobs_learned_during_a_burst():
    """500 at once from nothing: the short jobs end first; the jobs still running count as
    "longer than this" (not as if the endpoint only ran short jobs)."""
    jobs = durations("spread", 1000)
    later = Result(*(x[500:] for x in (lambda r: (r.looks, r.lateness))(simulate(jobs, at_once=500))), [])
    baseline = sdk(jobs[500:])
    assert later.looks_per_job < baseline.looks_per_job
    assert later.late(0.5) <= baseline.late(0.5)
    assert later.late(0.9) <= baseline.late(0.9)


@pytest.mark.parametrize(("kind", "most"), [("30s", 3), ("10s", 1)])
def test_celery_sized_jobs_few_looks(kind, most):
    learned = warmed(durations(kind, 620), at_once=100)
    assert max(learned.looks) <= most
    assert learned.late(0.9) <= 0.25


def test_back_off_until_twenty_durations_are_known():
    profile = EndpointProfile()
    schedule = profile.schedule(POLL)
    pauses = [schedule.next_delay(t, "IN_PROGRESS") for t in range(12)]
    assert pauses == pytest.approx([0.5 * 1.5 ** i for i in range(8)] + [10.0] * 4)
    for _ in range(MIN_SAMPLES - 1):
        profile.observe(body(5.0), 5.0)
    assert profile.schedule(POLL).next_delay(0.0, None) == 0.5  # 19 known: still the back-off
    profile.observe(body(5.0), 5.0)
    assert profile.schedule(POLL).next_delay(0.0, None) > 4.9  # 20: straight to the end


def test_a_wait_in_progress_switches_to_the_learned_schedule():
    profile = EndpointProfile()
    schedule = profile.schedule(POLL)
    assert schedule.next_delay(0.0, None) == 0.5
    for _ in range(MIN_SAMPLES):
        profile.observe(body(8.0), 8.0)
    pause = schedule.next_delay(0.5, "IN_PROGRESS")
    assert 7.5 <= pause <= 7.7  # from 0.5 s to just past the 8 s the endpoint's jobs take


# -- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["steady", "spread", "bimodal", "exponential", "tiny", "long"])
def test_pauses_stay_within_the_bounds(kind):
    rng = random.Random(3)
    make = {
        "steady": lambda: rng.uniform(4.5, 5.5),
        "spread": lambda: rng.uniform(0.5, 30),
        "bimodal": lambda: rng.choice([rng.uniform(0.1, 0.3), rng.uniform(40, 45)]),
        "exponential": lambda: rng.expovariate(1 / 20),
        "tiny": lambda: rng.uniform(0.01, 0.05),
        "long": lambda: rng.uniform(100, 400),
    }[kind]
    result = simulate([make() for _ in range(400)], at_once=20)
    assert min(result.pauses) >= MIN_PAUSE
    assert max(result.pauses) <= POLL.max_interval * CAP_SLACK
    # lateness is never worse than the longest pause allows
    assert max(result.lateness) <= POLL.max_interval * CAP_SLACK


def test_bimodal_durations_look_at_both_modes_and_not_between():
    rng = random.Random(5)
    jobs = [rng.choice([rng.uniform(1.0, 1.2), rng.uniform(20.0, 20.5)]) for _ in range(600)]
    result = simulate(jobs).after(MIN_SAMPLES)
    baseline = sdk(jobs).after(MIN_SAMPLES)
    assert result.looks_per_job <= baseline.looks_per_job / 3  # about 3 vs 14
    assert result.late(0.5) < baseline.late(0.5) / 2


def test_a_job_longer_than_any_seen_backs_off_from_the_start():
    profile = EndpointProfile()
    for _ in range(50):
        profile.observe(body(2.0), 2.0)
    schedule = profile.schedule(POLL)
    t = 0.0
    seen = []
    while t < 60:
        pause = schedule.next_delay(t, "IN_PROGRESS")
        seen.append(pause)
        t += pause
    overdue = seen[2:]  # the look near 2 s, then the job outlived everything seen
    assert 0.2 <= overdue[0] <= 0.5  # 10 % of the elapsed time, within MIN_PAUSE..poll.initial
    assert all(b >= a for a, b in zip(overdue, overdue[1:], strict=False))  # backing off ...
    assert overdue[-1] == POLL.max_interval  # ... up to the cap


def test_past_the_longest_seen_while_many_still_run_keeps_pace():
    """20 short jobs ended, 30 more are still being waited for past them: looks past the
    longest duration seen keep the lateness cap's pace instead of backing off."""
    profile = EndpointProfile()

    def waits_seen_at(elapsed: float, count: int) -> list[Any]:
        made = [profile.schedule(POLL) for _ in range(count)]
        for wait in made:
            wait.next_delay(elapsed, "IN_PROGRESS")
        return made

    def pauses_past_two_seconds() -> list[float]:
        wait = profile.schedule(POLL)
        wait.next_delay(2.1, "IN_PROGRESS")
        return [wait.next_delay(t, "IN_PROGRESS") for t in (7.0, 8.0, 9.0)]

    running = waits_seen_at(6.0, 30)
    for _ in range(MIN_SAMPLES):
        profile.observe(body(2.0), 2.0)
    assert pauses_past_two_seconds() == [sched.lateness_cap(t) for t in (7.0, 8.0, 9.0)]
    del running  # those waits ended unseen (no longer counted once the snapshot is remade)
    for _ in range(MIN_SAMPLES):
        profile.observe(body(2.0), 2.0)
    pauses = pauses_past_two_seconds()
    assert pauses[0] < pauses[1] < pauses[2]  # backing off


def test_drift_to_longer_jobs_is_learned_within_tens_of_jobs():
    profile = EndpointProfile()
    simulate(durations("steady", 300), profile=profile)
    doubled = [2 * d for d in durations("steady", 400, seed=9)]
    longer = simulate(doubled, profile=profile)
    assert profile.changes == 1
    fresh = simulate(doubled).after(100)
    # 10 ends far outside the usual range: the old durations fade to a tenth; a look near
    # them still pays while they keep some weight, less and less
    soon = Result(longer.looks[30:100], longer.lateness[30:100], [])
    later = longer.after(200)
    assert soon.looks_per_job <= fresh.looks_per_job + 1.5
    assert later.looks_per_job <= fresh.looks_per_job + 0.6
    assert later.late(0.5) <= fresh.late(0.5) + 0.05
    assert max(longer.lateness) <= POLL.max_interval * CAP_SLACK


def test_alternating_job_lengths_keep_both_in_memory():
    """An endpoint whose bursts alternate between 30 s and 10 s jobs (the Celery bench):
    after the first of each, a 30 s job takes 3 looks (pauses of at most ~10 s) and a 10 s
    one 1, each noticed within a second."""
    profile = EndpointProfile()
    rng = random.Random(2)
    for seconds, n in ((30, 100), (10, 300), (30, 100), (10, 300)):
        burst = simulate([seconds + rng.uniform(0, 0.05) for _ in range(n)], at_once=n, profile=profile)
    last30 = simulate([30 + rng.uniform(0, 0.05) for _ in range(100)], at_once=100, profile=profile)
    assert burst.looks_per_job <= 1.05 and burst.late(0.9) <= 1.0
    assert last30.looks_per_job <= 3 and last30.late(0.9) <= 1.0


def test_drift_to_shorter_jobs_is_learned_at_once():
    profile = EndpointProfile()
    simulate(durations("steady", 300), profile=profile)
    shorter = simulate([d / 5 for d in durations("steady", 200, seed=9)], profile=profile)
    assert profile.changes == 1
    # the first short job is noticed at the old 5 s expectation ...
    assert shorter.lateness[0] > 3.0
    # ... the next ones within the lateness cap of the short duration now seen ...
    assert max(shorter.lateness[1:]) <= sched.lateness_cap(1.0)
    # ... and once the old durations are dropped, as a fresh profile would
    assert shorter.after(30).late(0.5) <= 0.25


def test_a_burst_is_not_taken_for_drift():
    """A burst's ends come shortest first: that is no change of the endpoint's jobs."""
    for kind in ("steady", "spread"):
        profile = EndpointProfile()
        simulate(durations(kind, 1000), at_once=500, profile=profile)
        assert profile.changes == 0


def test_a_queued_job_is_not_looked_at_before_a_run_could_end():
    profile = EndpointProfile()
    for _ in range(40):  # 2 s queued + 3 s running, or 0 s queued + 3 s running
        profile.observe(body(5.0, queued=2.0), 5.0)
        profile.observe(body(3.0, queued=0.0), 3.0)
    schedule = profile.schedule(POLL)
    running = schedule.next_delay(3.2, "IN_PROGRESS")
    queued = profile.schedule(POLL).next_delay(3.2, "IN_QUEUE")
    assert running < 2.0
    assert queued >= 3.0  # still queued at 3.2 s: it cannot end before 6.2 s


# -- what is learned ----------------------------------------------------------------------------


def test_observe_learns_the_endpoints_own_times_not_our_lateness():
    profile = EndpointProfile()
    for _ in range(MIN_SAMPLES):
        # ended after 4 s (1 s queued + 3 s running) but noticed at 9 s
        profile.observe({"status": "COMPLETED", "delayTime": 1000, "executionTime": 3000}, 9.0)
    assert 3.9 <= profile.schedule(POLL).next_delay(0.0, None) <= 4.2


def test_observe_falls_back_to_the_wait_and_ignores_what_teaches_nothing():
    profile = EndpointProfile()
    profile.observe({"status": "COMPLETED"}, 6.0)                      # no times: waited
    profile.observe({"status": "FAILED", "executionTime": 500}, 2.0)   # one time only: waited
    profile.observe({"status": "TIMED_OUT", "delayTime": 0, "executionTime": 600_000}, 601.0)
    profile.observe({"status": "CANCELLED", "delayTime": 0, "executionTime": 1}, 1.0)  # ignored
    profile.observe({"status": "IN_PROGRESS", "delayTime": 0, "executionTime": 1}, 1.0)  # ignored
    profile.observe({"status": "COMPLETED", "delayTime": "x", "executionTime": 1}, 3.0)  # waited
    profile.observe({"status": "COMPLETED", "delayTime": -5, "executionTime": True}, 3.0)  # waited
    profile.observe({"status": "COMPLETED"}, float("nan"))  # ignored
    assert profile.samples == 5


def test_memory_is_bounded():
    profile = EndpointProfile()
    for i in range(1000):
        profile.observe(body(1.0 + i % 7), 1.0)
    assert profile.samples == sched.MEMORY


def test_profiles_one_per_endpoint_and_long_poll_remembered():
    registry = Profiles()
    a = registry.get("http://127.0.0.1:1/v2", "ep")
    assert a is registry.get("http://127.0.0.1:1/v2/", "ep")
    assert a is not registry.get("http://127.0.0.1:1/v2", "other")
    assert a is not registry.get("http://127.0.0.1:2/v2", "ep")
    assert a.long_poll is None
    a.long_poll = False
    assert registry.get("http://127.0.0.1:1/v2", "ep").long_poll is False
    registry.clear()
    assert registry.get("http://127.0.0.1:1/v2", "ep").long_poll is None
    assert isinstance(sched.profiles, Profiles)


def test_profiles_forget_the_least_recently_used_past_the_limit(monkeypatch):
    monkeypatch.setattr(Profiles, "LIMIT", 3)
    registry = Profiles()
    first = registry.get("u", "a")
    for name in "bcd":
        registry.get("u", name)
        registry.get("u", "a")  # kept in use
    assert registry.get("u", "a") is first
    assert len(registry._profiles) == 3


def test_stream_schedule_backs_off_to_its_cap_and_resets():
    profile = EndpointProfile()
    for _ in range(50):
        profile.observe(body(5.0), 5.0)  # learned durations do not steer stream reads
    schedule = profile.schedule(POLL, stream=True)
    pauses = [schedule.next_delay(float(i), "IN_PROGRESS") for i in range(10)]
    assert pauses[0] == pytest.approx(0.2)
    assert pauses[-1] == POLL.stream_max_interval
    schedule.reset()
    assert schedule.next_delay(11.0, "IN_PROGRESS") == pytest.approx(0.2)


def test_reset_after_a_back_off_looks_promptly_again():
    schedule = EndpointProfile().schedule(POLL)
    for t in range(6):
        schedule.next_delay(float(t), "IN_PROGRESS")
    schedule.reset()
    assert schedule.next_delay(6.0, "IN_PROGRESS") == 0.5


def test_profile_is_safe_to_share_between_threads():
    profile = EndpointProfile()
    errors: list[BaseException] = []

    def feed(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                profile.observe(body(rng.uniform(1, 3)), 3.0)
                pause = profile.schedule(POLL).next_delay(rng.uniform(0, 4), "IN_PROGRESS")
                assert MIN_PAUSE <= pause <= POLL.max_interval
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert profile.samples == sched.MEMORY
