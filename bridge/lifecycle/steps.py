"""The steps a lifecycle plan yields, and the interruptions a driver may throw into it.

A *plan* is a generator: it yields a step and is sent back the step's answer (or has an
exception thrown in). Drivers (:mod:`bridge.lifecycle.drive`) perform the steps: the sync
driver with a blocking transport, the async driver with an asyncio one, so the plan itself
does no I/O and is written once.

==================  =========================================  ===========================
step                what the driver does                       sent back
==================  =========================================  ===========================
``Attempt(call)``   send one HTTP request                      a Reply, or the TransportError
``Sleep(s)``        pause                                      None
``Emit(value)``     hand a stream chunk (or batch) onwards     None
``Hook(name, ...)`` run a transform hook (``Hooks.<name>``)     its result
``Event(name,...)`` notify observers (never fails the job)     None
``Stage(name,...)`` ask the caller's stages (journal, store)   the stage's answer
==================  =========================================  ===========================

A driver interrupts a plan only while it waits on an ``Attempt`` or a ``Sleep`` (the steps
that take time), by throwing one of :class:`Cancelled`, :class:`HandedOff` or
:class:`Delivered` into it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridge.wire import Call

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempt:
    """Send ``call`` once; the driver sends back a Reply or the TransportError raised."""

    call: Call


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Emit:
    """A stream chunk (or, for batching callers, a list of them) for the caller."""

    value: Any


@dataclass(frozen=True, slots=True)
class Hook:
    """Run transform hook ``name`` (``transform_input``, ``lookup``, ``transform_output``,
    ``transform_chunk``, ``redact``) on ``value``; the driver sends back its result."""

    name: str
    ctx: Any
    value: Any


@dataclass(frozen=True, slots=True)
class Event:
    """Notify the observers of ``name`` (``submitted``, ``status_changed``, ...)."""

    name: str
    ctx: Any
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stage:
    """Ask the caller's :class:`~bridge.lifecycle.stages.Stages` (``claim``, ``record``, ...)."""

    name: str
    args: tuple[Any, ...] = ()


Step = Attempt | Sleep | Emit | Hook | Event | Stage
Plan = Generator[Step, Any, T]

#: Steps during which a driver may throw an interruption into the plan.
INTERRUPTIBLE = (Attempt, Sleep)


class Cancelled(Exception):
    """The job's caller gave up: revoked (``reason='revoked'``), ``expires`` passed
    (``'expired'``) or a batch was cancelled. The plan cancels the remote job on the way
    out unless ``settled`` (already done)."""

    def __init__(self, reason: str, job_id: str | None = None, settled: bool = False) -> None:
        super().__init__(reason, job_id, settled)
        self.reason = reason
        self.job_id = job_id
        self.settled = settled


class HandedOff(Exception):
    """The worker is shutting down; the remote job is left running for the next delivery."""


class Delivered(Exception):  # noqa: N818 (an interruption, not an error)
    """A verified webhook brought the job's terminal status body: the wait ends with it."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.body = body
