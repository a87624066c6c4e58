"""Admission control for a batch: how fast jobs may be submitted and how many may wait.

- :class:`Pacer` keeps submissions inside an endpoint's rate budget (RunPod: /run 1,000 per
  10 s). The default ``bucket`` pacing mirrors a token bucket of ``limit`` tokens refilled
  over ``per`` seconds: a burst of ``limit``, then ``limit/per`` per second, which reaches the
  rate bound ``(N - limit) / (limit/per)`` exactly. ``window`` pacing is stricter (no window
  of ``per`` seconds ever holds more than ``limit`` sends), for servers that count in fixed or
  sliding windows (setting BRIDGE_BATCH_PACING). Either way a 429 that still comes (another
  client shares the budget, or the server counts differently) pauses every sender for the
  Retry-After and the request is sent again.
- :class:`Gate` bounds the jobs in flight (``concurrency``) and the jobs still queued at the
  endpoint (``max_queue_depth``), so a 100,000-input batch never floods the remote queue.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from dataclasses import dataclass

from bridge.config import is_runpod_api
from bridge.errors import ConfigurationError
from bridge.limits import RUNPOD_LIMITS, WINDOW_SECONDS

#: RunPod's documented per-endpoint budgets (requests, seconds).
RUNPOD_RATES: dict[str, tuple[int, float]] = {
    route: (RUNPOD_LIMITS[route][0], WINDOW_SECONDS) for route in ("run", "status", "cancel")
}


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``per`` seconds."""

    limit: int
    per: float

    @classmethod
    def parse(cls, value: str | tuple[int, float] | Rate | None) -> Rate | None:
        """``"1000/10"`` (or ``"1000/10s"``), a ``(limit, per)`` tuple, a Rate, or None/"" / "0"
        for no pacing."""
        if value is None or isinstance(value, Rate):
            return value
        if isinstance(value, tuple):
            return cls(int(value[0]), float(value[1]))
        text = value.strip().lower().rstrip("s")
        if text in ("", "0", "none", "off"):
            return None
        try:
            limit, _, per = text.partition("/")
            rate = cls(int(limit), float(per or 1))
        except ValueError as exc:
            raise ConfigurationError(
                f"rate {value!r} is not LIMIT/SECONDS", None, None, "e.g. --rate 1000/10 (1,000 per 10 s)"
            ) from exc
        if rate.limit <= 0 or rate.per <= 0:
            raise ConfigurationError(f"rate {value!r} must be positive", None, None, "e.g. 1000/10")
        return rate


def default_rate(route: str, base_url: str, explicit: str | tuple[int, float] | Rate | None = None) -> Rate | None:
    """The budget to pace ``route`` to: the explicit value, else ``BRIDGE_BATCH_<ROUTE>_RATE``,
    else RunPod's documented limit when talking to RunPod, else unpaced (a local endpoint)."""
    if explicit is not None:
        return Rate.parse(explicit)
    env = os.environ.get(f"BRIDGE_BATCH_{route.upper()}_RATE")
    if env is not None:
        return Rate.parse(env)
    if is_runpod_api(base_url) and route in RUNPOD_RATES:
        return Rate(*RUNPOD_RATES[route])
    return None


class Pacer:
    """Pacing for one route; ``acquire()`` returns when a send is allowed.

    ``mode``: ``"bucket"`` (default, BRIDGE_BATCH_PACING) or ``"window"``; for ``window``,
    ``margin`` seconds are added to the window so network jitter cannot push ``limit + 1``
    arrivals into one of the server's windows.
    """

    def __init__(self, rate: Rate | None, *, mode: str | None = None, margin: float = 0.05) -> None:
        self.rate = rate
        self.mode = mode or os.environ.get("BRIDGE_BATCH_PACING", "bucket")
        if self.mode not in ("bucket", "window"):
            raise ConfigurationError(f"pacing {self.mode!r} is not 'bucket' or 'window'", None, None,
                                     "BRIDGE_BATCH_PACING")
        self.window = (rate.per + margin) if rate else 0.0
        self._sent: collections.deque[float] = collections.deque()
        self._tokens = float(rate.limit) if rate else 0.0
        self._stamp = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.throttled = 0  # 429s absorbed

    def _wait_needed(self, now: float) -> float:
        """0 after taking a send, else seconds until one may be available."""
        assert self.rate is not None
        if self.mode == "bucket":
            refill = self.rate.limit / self.rate.per
            self._tokens = min(float(self.rate.limit), self._tokens + (now - self._stamp) * refill)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / refill
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        if len(self._sent) < self.rate.limit:
            self._sent.append(now)
            return 0.0
        return self._sent[0] + self.window - now

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: senders get their turn in arrival order
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                if self.rate is None:
                    return
                wait = self._wait_needed(now)
                if wait <= 0:
                    return
                await asyncio.sleep(wait)

    def penalize(self, seconds: float) -> None:
        """A 429 came back: hold every sender for ``seconds`` (the Retry-After, or a back-off)."""
        self.throttled += 1
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self._tokens = 0.0  # the server's bucket is empty: start refilling from nothing


class Gate:
    """Bounds jobs in flight and jobs queued at the endpoint.

    ``enter()`` waits for a free slot, ``started(ref)`` marks a job as picked up by a worker
    (no longer counted against the queue depth), ``leave(ref)`` frees the slot.
    """

    def __init__(self, concurrency: int, max_queue_depth: int | None = None) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
        self.concurrency = concurrency
        self.max_queue_depth = max_queue_depth or concurrency
        self.in_flight = 0
        self._queued: set[int] = set()
        self._cond = asyncio.Condition()

    @property
    def queued(self) -> int:
        return len(self._queued)

    async def enter(self, ref: int) -> None:
        async with self._cond:
            await self._cond.wait_for(
                lambda: self.in_flight < self.concurrency and len(self._queued) < self.max_queue_depth
            )
            self.in_flight += 1
            self._queued.add(ref)

    async def started(self, ref: int) -> None:
        if ref in self._queued:
            async with self._cond:
                self._queued.discard(ref)
                self._cond.notify_all()

    async def leave(self, ref: int) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._queued.discard(ref)
            self._cond.notify_all()
