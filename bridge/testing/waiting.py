"""``wait_until``: wait for a condition with a deadline, the way tests should synchronise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01) -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Raises ``AssertionError`` (with the last value seen) once ``timeout`` seconds have
    passed, so a test fails with a message instead of hanging or racing a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)
