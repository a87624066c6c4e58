"""One object per process, made on first use, for what owns threads or an event loop
(the gateway, the held jobs): a forked child (a prefork pool process) gets a fresh one,
because the parent's threads do not survive a fork."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


class PerProcess(Generic[T]):
    """``PerProcess(make)``: :meth:`get` returns this process's object, calling ``make``
    the first time in each process. Make these at module level (each registers a fork
    hook that lives as long as the process)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._value: T | None = None
        self._pid = 0
        os.register_at_fork(after_in_child=self._forget_in_child)

    def get(self) -> T:
        """This process's object, made now if there is none yet."""
        with self._lock:
            value = self.current()
            if value is None:
                value, self._pid = self._make(), os.getpid()
                self._value = value
            return value

    def current(self) -> T | None:
        """This process's object if one was made (nothing is made)."""
        value = self._value
        # The pid check also covers a fork the hook did not see (a C extension's fork()).
        return value if value is not None and self._pid == os.getpid() else None

    def reset(self) -> T | None:
        """Forget this process's object and return it (for the caller to close), if any."""
        with self._lock:
            value = self.current()
            self._value = None
            return value

    def _forget_in_child(self) -> None:
        # The parent's lock may have been held by one of its other threads at the fork.
        self._lock = threading.Lock()
        self._value = None
