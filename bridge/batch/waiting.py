"""How the batch engine waits for one remote job to end.

:class:`PollWaiter` long-polls (``Job.fetch(wait=...)``: one held-open status request that
returns the moment the job ends, so a job costs one or two status requests) and falls back to
backed-off polls on endpoints without long polling. The webhook receiver
(:mod:`bridge.webhooks`) provides a second waiter that needs no status requests at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bridge import errors
from bridge.batch.admission import Pacer, Rate
from bridge.status import is_terminal

OnStarted = Callable[[], Awaitable[None]]


class Waiter(Protocol):
    async def webhook_for(self, batch_id: str, index: int) -> str | None:
        """The webhook URL to submit this input with (None: no webhook)."""

    async def wait(self, job: Any, batch_id: str, index: int, on_started: OnStarted) -> dict[str, Any]:
        """Return the job's terminal status body; call ``on_started`` once it left the queue."""


class PollWaiter:
    """Long polls of ``long_poll`` seconds; pauses from ``initial`` up to ``max_interval``
    between polls that came back early without an answer (no long polling on the endpoint)."""

    def __init__(
        self,
        *,
        long_poll: float = 20.0,
        initial: float = 0.2,
        max_interval: float = 5.0,
        status_rate: Rate | None = None,
    ) -> None:
        self.long_poll = long_poll
        self.initial = initial
        self.max_interval = max_interval
        self.pacer = Pacer(status_rate)

    async def webhook_for(self, batch_id: str, index: int) -> str | None:
        return None

    async def look(self, job: Any, wait: float | None) -> dict[str, Any] | None:
        """One paced status look; None after a retryable error (already backed off)."""
        await self.pacer.acquire()
        try:
            body: dict[str, Any] = await job.fetch(wait=wait)
            return body
        except errors.RateLimited as exc:
            self.pacer.penalize(exc.retry_after if exc.retry_after is not None else 1.0)
        except (errors.ServerError, errors.TransportError):
            await asyncio.sleep(self.initial)
        return None

    async def wait(self, job: Any, batch_id: str, index: int, on_started: OnStarted) -> dict[str, Any]:
        pause = self.initial
        started = False
        while True:
            t0 = time.monotonic()
            body = await self.look(job, self.long_poll)
            if body is not None:
                status = str(body.get("status"))
                if is_terminal(status):
                    return body
                if status == "IN_PROGRESS" and not started:
                    started = True
                    await on_started()
            if time.monotonic() - t0 < self.long_poll / 2:
                # The endpoint answered at once: no long polling there, so back off.
                await asyncio.sleep(pause)
                pause = min(self.max_interval, pause * 1.5)
