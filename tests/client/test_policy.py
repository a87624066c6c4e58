"""RetryPolicy and PollPolicy arithmetic (pure functions of time and attempt number)."""

from __future__ import annotations

import time

from bridge import errors
from bridge.client import PollPolicy, RetryPolicy
from bridge.client._policy import Waiter


def _server_error() -> errors.ServerError:
    return errors.ServerError("boom", None, "ep", None, 503)


def test_backoff_grows_is_capped_and_jittered():
    policy = RetryPolicy(base=0.5, factor=2.0, max_backoff=3.0, jitter=0.5)
    for retry, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [policy.backoff(retry) for _ in range(200)]
        assert all(full * 0.5 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered, so a crowd spreads out
    assert RetryPolicy(jitter=0.0, base=1.0).backoff(1) == 1.0


def test_retry_after_wins_when_longer():
    policy = RetryPolicy(base=0.1, max_backoff=1.0)
    assert 5.0 <= policy.backoff(1, retry_after=5.0) <= 6.0
    assert policy.backoff(1, retry_after=0.01) <= 0.1


def test_next_delay_gives_up_on_attempts_deadline_and_non_retryable():
    policy = RetryPolicy(attempts=3, deadline=10.0, base=0.01)
    now = time.monotonic()
    assert policy.next_delay(1, _server_error(), now) is not None
    assert policy.next_delay(3, _server_error(), now) is None  # attempts used up
    assert policy.next_delay(1, errors.NotFound("x", None, None, None, 404), now) is None
    assert policy.next_delay(1, errors.AuthenticationError("x"), now) is None
    assert policy.next_delay(1, errors.TransportError("x"), now) is not None
    limited = errors.RateLimited("x", None, None, None, 429, 30.0)
    assert policy.next_delay(1, limited, now) is None  # Retry-After beyond the deadline
    assert policy.next_delay(1, _server_error(), now, deadline=now) is None  # caller's deadline
    assert RetryPolicy.none().next_delay(1, _server_error(), now) is None


def test_waiter_pauses_grow_and_respect_the_deadline():
    waiter = Waiter(None, PollPolicy(initial=0.2, factor=2.0, max_interval=1.0))
    assert [round(waiter.next_pause(), 3) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    waiter.reset()
    assert waiter.next_pause() == 0.2
    assert waiter.long_poll_wait() == 20.0  # PollPolicy().long_poll: one default everywhere
    short = Waiter(0.5, PollPolicy())
    assert short.long_poll_wait() is None  # under a second: a plain look
    assert short.next_pause() <= 0.5
    assert Waiter(10, PollPolicy(long_poll=0)).long_poll_wait() is None
    assert Waiter(0, PollPolicy()).expired()
