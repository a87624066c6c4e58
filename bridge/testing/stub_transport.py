"""Socket-free transports for unit tests: :class:`StubTransport` (a
:class:`bridge.transport.Transport`) and :class:`AsyncStubTransport` (an
:class:`bridge.transport.AsyncTransport`), answering from one scripted list per route.

::

    stub = StubTransport({
        "run": [reply(200, {"id": "j1", "status": "IN_QUEUE"})],
        "status": [reply(200, {"id": "j1", "status": "IN_PROGRESS"}), reply(500, {"error": "x"}),
                   TransportError("down"), reply(200, {"id": "j1", "status": "COMPLETED"})],
    })

Routes are :attr:`bridge.wire.Call.route`: ``run``, ``runsync``, ``status``,
``status-sync`` (a long poll), ``stream``, ``cancel``, ``retry``, ``purge-queue``,
``health``. Each call takes the next entry of its route; the last entry repeats. An entry is
a :class:`~bridge.transport.Reply` (returned), an exception (raised: a
:class:`bridge.errors.TransportError` is how a transport says no answer came), or a callable
``call -> Reply`` (called; it may raise). A route without a script raises ``AssertionError``:
an unexpected request fails the test. ``calls`` records every call sent, in order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from requests.structures import CaseInsensitiveDict

from bridge.transport import Reply
from bridge.wire import Call

__all__ = ["AsyncStubTransport", "SentCall", "StubTransport", "reply"]

Entry = Reply | BaseException | Callable[[Call], Reply]


def reply(status: int, json_body: Any = None, headers: Mapping[str, str] | None = None) -> Reply:
    """A :class:`Reply` with ``json_body`` as JSON (no body when None) and case-insensitive
    ``headers`` (``Retry-After``, ``Location``), as a real transport gives them."""
    body = b"" if json_body is None else json.dumps(json_body).encode()
    return Reply(status, CaseInsensitiveDict(headers or {}), body)


@dataclass(frozen=True)
class SentCall(Call):
    """One call a stub received: the :class:`Call` itself (``method``, ``route``, ``url``,
    ``headers``, ``job_id`` ...) plus ``json``, its body parsed."""

    json: Any = None

    @classmethod
    def of(cls, call: Call) -> SentCall:
        values = {f.name: getattr(call, f.name) for f in fields(Call)}
        return cls(**values, json=json.loads(call.body) if call.body else None)

    @property
    def call(self) -> Call:
        """The call as sent (this object is one)."""
        return self


class _Script:
    """The per-route tables and the record of calls; thread-safe (a sync transport may be
    shared between threads)."""

    def __init__(self, script: Mapping[str, Iterable[Entry]]) -> None:
        self._script = {route: list(entries) for route, entries in script.items()}
        for route, entries in self._script.items():
            if not entries:
                raise ValueError(f"the script for route {route!r} is empty: give at least one entry")
        self._next = dict.fromkeys(self._script, 0)
        self._lock = threading.Lock()
        self.calls: list[SentCall] = []
        self.closed = False

    def answer(self, call: Call) -> Reply:
        with self._lock:
            self.calls.append(SentCall.of(call))
            entries = self._script.get(call.route)
            if entries is None:
                raise AssertionError(
                    f"unexpected {call.method} /{call.route} ({call.url}): the stub has a script for "
                    f"{sorted(self._script)}"
                )
            index = self._next[call.route]
            self._next[call.route] = min(index + 1, len(entries) - 1)  # the last entry repeats
            entry = entries[index]
        if isinstance(entry, BaseException):
            raise entry
        if isinstance(entry, Reply):
            return entry
        return entry(call)

    def routes(self) -> list[str]:
        """The route of every call sent, in order."""
        return [sent.route for sent in self.calls]

    def count(self, route: str) -> int:
        return sum(1 for sent in self.calls if sent.route == route)


class StubTransport(_Script):
    """A :class:`bridge.transport.Transport` answering from a script (see the module)."""

    def send(self, call: Call) -> Reply:
        return self.answer(call)

    def close(self) -> None:
        self.closed = True


class AsyncStubTransport(_Script):
    """A :class:`bridge.transport.AsyncTransport` answering from a script (see the module)."""

    async def send(self, call: Call) -> Reply:
        return self.answer(call)

    async def aclose(self) -> None:
        self.closed = True
