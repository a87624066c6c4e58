"""The jobs this worker process is waiting on, and what may interrupt their waits.

Each job's wait is the lifecycle's own plan (:mod:`bridge.lifecycle.plans`), driven on the
gateway's event loop; a job costs nothing between its requests. This registry adds what
only a Celery worker has: one coroutine reads, every ``cancel_check`` seconds, the cancel
keys of all watched tasks with one MGET per 5,000 tasks and interrupts a revoked task's wait
(:class:`~bridge.lifecycle.steps.Cancelled`: the plan cancels the remote job, once per task,
and ends REVOKED); a verified webhook ends a wait with its body
(:class:`~bridge.lifecycle.steps.Delivered`); a warm shutdown interrupts every wait with
:class:`~bridge.lifecycle.steps.HandedOff` (the remote jobs keep running for the next worker).
Everything here runs on the gateway's loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bridge import keys
from bridge.lifecycle.drive import Control
from bridge.lifecycle.steps import Cancelled, Delivered, HandedOff
from bridge.wire import terminal

log = logging.getLogger("bridge.gateway")

#: Webhook bodies kept for tasks whose wait has not begun yet (submit -> wait race).
EARLY_MAX = 10_000


class Watches:
    def __init__(self, redis: Any, cancel_check: float) -> None:
        self.redis = redis
        self.cancel_check = cancel_check
        #: task id -> the controls of its waits, each with whether it is a stream's.
        self.watches: dict[str, dict[Control, bool]] = {}
        #: Webhook bodies that arrived before their task's wait began.
        self.early: dict[str, dict[str, Any]] = {}
        self.handing_off = False
        self.handoff_key: str | None = None  # set by the worker step (prefork children read it)
        self.stats = {"cancel_checks": 0}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flags_loop())

    @property
    def in_flight(self) -> int:
        return sum(len(ws) for ws in self.watches.values())

    def watch(self, task_id: str, control: Control, stream: bool) -> None:
        """``task_id``'s wait begins: interruptions apply to it from now on."""
        if self.handing_off:
            control.interrupt(HandedOff(task_id))
        self.watches.setdefault(task_id, {})[control] = stream
        early = self.early.pop(task_id, None)
        if early is not None and not stream:
            control.interrupt(Delivered(early))

    def forget(self, task_id: str, control: Control) -> None:
        ws = self.watches.get(task_id)
        if ws is not None:
            ws.pop(control, None)
            if not ws:
                del self.watches[task_id]

    def deliver(self, task_id: str, body: dict[str, Any]) -> None:
        """A verified webhook for ``task_id`` arrived: end its (non-stream) waits with
        ``body`` when it is terminal. Called on the loop (the webhook waiter's listener)."""
        if not terminal(body):
            return
        watched = self.watches.get(task_id)
        if not watched:
            if len(self.early) < EARLY_MAX:  # bounded: ended jobs pop theirs
                self.early[task_id] = body
            return
        for control, stream in list(watched.items()):
            if not stream:
                control.interrupt(Delivered(body))

    def handoff(self) -> None:
        """Stop every wait with HandedOff, leaving remote jobs running (warm shutdown)."""
        self.handing_off = True
        for ws in list(self.watches.values()):
            for control in list(ws):
                control.interrupt(HandedOff())

    async def _flags_loop(self) -> None:
        """Every ``cancel_check`` seconds while anything is watched: the cancel keys."""
        while True:
            try:
                # One MGET per round; with tens of thousands in flight, rounds stretch to 1 s.
                await asyncio.sleep(min(1.0, max(self.cancel_check, len(self.watches) / 20000)))
                if self.watches or self.handoff_key:
                    await self._check_flags()
            except asyncio.CancelledError:
                raise
            except Exception:  # the registry must survive anything (e.g. Redis blips)
                log.exception("bridge: checking cancel keys failed; continuing")
                await asyncio.sleep(0.5)

    async def _check_flags(self) -> None:
        """One MGET per 5,000 watched tasks: cancel keys (and this worker's handoff flag)."""
        self.stats["cancel_checks"] += 1
        if self.handoff_key and not self.handing_off and await self.redis.exists(self.handoff_key):
            self.handoff()
            return
        task_ids = list(self.watches)
        for start in range(0, len(task_ids), 5000):
            chunk = task_ids[start:start + 5000]
            values = await self.redis.mget([keys.cancel(t) for t in chunk])
            for task_id, value in zip(chunk, values, strict=True):
                if value is not None:
                    for control in list(self.watches.get(task_id, ())):
                        control.interrupt(Cancelled("revoked"))
