"""The waiting and retry policies, now in :mod:`bridge.lifecycle` (one set for every
caller); re-exported here for code that imported them from the client."""

from __future__ import annotations

from bridge.lifecycle.clocks import UnknownStatusClock
from bridge.lifecycle.clocks import WaitClock as Waiter
from bridge.lifecycle.settings import PollPolicy, RetryPolicy

__all__ = ["PollPolicy", "RetryPolicy", "UnknownStatusClock", "Waiter"]
