"""Drivers: perform a plan's steps (:mod:`bridge.lifecycle.steps`) and return its value.

:class:`AsyncDriver` runs in an event loop (the gateway's, the batch engine's, the caller's
for ``AsyncioEndpoint``) over an async ``send``; :class:`SyncDriver` in the calling thread
over a blocking one (``Endpoint``, ``bridge run``). Both answer hooks with the caller's
:class:`bridge.hooks.Hooks` and stages with its :class:`~bridge.lifecycle.stages.Stages`.

An async caller may interrupt a running plan through its :class:`Control` (a revoke, a
webhook delivery, a hand-off at shutdown): the interruption is thrown into the plan while it
waits on a request or a pause, once the plan has said it is ``waiting``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from bridge.lifecycle.stages import NO_STAGES, Stages
from bridge.lifecycle.steps import Attempt, Emit, Event, Hook, Plan, Sleep, Stage

T = TypeVar("T")

__all__ = ["AsyncDriver", "Control", "SyncDriver"]


class Control:
    """The interruption handle of one running plan (async drivers only)."""

    __slots__ = ("armed", "busy", "pending", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.pending: BaseException | None = None
        self.armed = False  # the plan is waiting: interruptions may be thrown in
        self.busy = False  # the driver is awaiting an Attempt or a Sleep

    def interrupt(self, exc: BaseException) -> None:
        """Throw ``exc`` into the plan at its next (or current) request or pause; the first
        interruption wins. Call on the plan's event loop."""
        if self.pending is not None:
            return
        self.pending = exc
        if self.armed and self.busy and self.task is not None:
            self.task.cancel()

    def _take(self) -> BaseException | None:
        exc = self.pending
        if not self.armed or exc is None or exc is _SPENT:
            return None
        self.pending = _SPENT
        return exc


class _Spent(Exception):
    """Marks a control whose interruption was delivered (later ones are ignored)."""


_SPENT = _Spent()


def _advance(plan: Plan[Any], reply: Any, throw: BaseException | None) -> tuple[bool, Any]:
    """Send ``reply`` into ``plan`` (or throw ``throw``): ``(True, its value)`` when it
    ended, else ``(False, its next step)``."""
    try:
        return False, (plan.throw(throw) if throw is not None else plan.send(reply))
    except StopIteration as stop:
        return True, stop.value


def _active(hooks: Any) -> Any:
    """The hooks to run, or None when no plugin implements any (hooks answer at once)."""
    return hooks if hooks is not None and hooks.enabled else None


async def _observed(seen: Any, notified: Any) -> None:
    """The stages' observation (if awaitable), then the plugins' observers."""
    if seen is not None:
        await seen
    await notified


def _hook_sync(hooks: Any, step: Hook) -> Any:
    return getattr(hooks, step.name)(step.ctx, step.value)


class SyncDriver:
    """Runs plans in the calling thread over ``send(call) -> Reply`` (raising on failure)."""

    def __init__(self, send: Callable[[Any], Any], hooks: Any = None, stages: Stages | None = None) -> None:
        self.send = send
        self.hooks = hooks
        self.stages = stages or NO_STAGES

    def steps(self, plan: Plan[T]) -> Iterator[Any]:
        """Run ``plan``, yielding what it emits; the generator's return value is the plan's."""
        reply: Any = None
        throw: BaseException | None = None
        hooks = _active(self.hooks)
        while True:
            ended, step = _advance(plan, reply, throw)
            if ended:
                return step  # type: ignore[no-any-return]
            reply = throw = None
            if isinstance(step, Attempt):
                try:
                    reply = self.send(step.call)
                except Exception as exc:  # the plan maps it (one place: the wire)
                    reply = exc
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            elif isinstance(step, Emit):
                yield step.value
            else:
                try:
                    reply = self._local(step, hooks)
                except BaseException as exc:  # a veto, a stage's refusal: the plan ends it
                    throw = exc

    def _local(self, step: Any, hooks: Any) -> Any:
        """A hook, an event or a stage, answered in this thread."""
        if isinstance(step, Hook):
            return _identity(step) if hooks is None else _hook_sync(hooks, step)
        if isinstance(step, Event):
            self.stages.on_event(step.name, step.ctx, step.data)
            if hooks is not None:
                hooks.notify(step.name, step.ctx, **step.data)
            return None
        return getattr(self.stages, step.name)(*step.args)

    def run(self, plan: Plan[T]) -> T:
        steps = self.steps(plan)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


def _identity(step: Hook) -> Any:
    """A transform hook with no plugins: the value unchanged (lookup: no hit)."""
    return (False, None) if step.name == "lookup" else step.value


class AsyncDriver:
    """Runs plans in the running event loop over ``async send(call) -> Reply``."""

    def __init__(self, send: Callable[[Any], Awaitable[Any]], hooks: Any = None,
                 stages: Stages | None = None) -> None:
        self.send = send
        self.hooks = hooks
        self.stages = stages or NO_STAGES
        # Stages that observe no events are not asked (most callers: every event saved a call).
        self._observe = None if type(self.stages).on_event is Stages.on_event else self.stages.on_event

    async def run(self, plan: Plan[T], control: Control | None = None,
                  emit: Callable[[Any], Any] | None = None) -> T:
        """Run ``plan`` to its value; ``emit(value)`` receives what it emits (awaited when
        it returns an awaitable)."""
        reply: Any = None
        throw: BaseException | None = None
        hooks = _active(self.hooks)
        if control is not None:
            control.task = asyncio.current_task()
        while True:
            ended, step = _advance(plan, reply, throw)
            if ended:
                return step  # type: ignore[no-any-return]
            reply = throw = None
            if isinstance(step, (Attempt, Sleep)):
                if control is not None:
                    throw = control._take()
                    if throw is not None:
                        continue
                    control.busy = True
                try:
                    if isinstance(step, Attempt):
                        reply = await self.send(step.call)
                    else:
                        await asyncio.sleep(step.seconds)
                except asyncio.CancelledError:
                    throw = control._take() if control is not None else None
                    if throw is None:
                        raise
                    # ours, not the caller's: the task goes on (3.11+ counts cancellations)
                    uncancel = getattr(asyncio.current_task(), "uncancel", None)
                    if uncancel is not None:
                        uncancel()
                except Exception as exc:  # the plan maps it (one place: the wire)
                    reply = exc
                finally:
                    if control is not None:
                        control.busy = False
            elif isinstance(step, Emit):
                if emit is not None:
                    result = emit(step.value)
                    if inspect.isawaitable(result):
                        await result
            else:
                if control is not None and isinstance(step, Stage) and step.name == "waiting":
                    control.armed = True
                try:
                    reply = self._answer(step, hooks)
                    if inspect.isawaitable(reply):
                        reply = await reply
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # a veto, a stage's refusal: the plan ends it
                    throw = exc

    def _answer(self, step: Any, hooks: Any) -> Any:
        """A hook, an event or a stage: its answer, or an awaitable of it (only what is
        really asynchronous makes a coroutine: most steps answer at once)."""
        if isinstance(step, Hook):
            if hooks is None:
                return _identity(step)
            return getattr(hooks, "a" + step.name)(step.ctx, step.value)
        if isinstance(step, Event):
            seen = self._observe(step.name, step.ctx, step.data) if self._observe is not None else None
            if hooks is None:
                return seen
            return _observed(seen, hooks.anotify(step.name, step.ctx, **step.data))
        return getattr(self.stages, step.name)(*step.args)

    async def emitted(self, plan: Plan[Any]) -> AsyncIterator[Any]:
        """Run ``plan``, yielding what it emits (an async client's stream)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        async def body() -> None:
            try:
                await self.run(plan, emit=queue.put_nowait)
            finally:
                queue.put_nowait(done)

        task = asyncio.ensure_future(body())
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                yield item
            await task  # the plan's error, after the last chunk
        finally:
            if not task.done():
                task.cancel()
