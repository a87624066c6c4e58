"""One reader of one task stream, fed by :class:`bridge.stream_hub.StreamHub`.

Events arrive in entry-id order and never twice (the hub's backlog read and its live loop may
overlap). A reader that falls :data:`MAX_QUEUED` events behind is dropped rather than
buffered without bound; its browser reconnects with Last-Event-ID and reads the rest from
Redis.
"""

from __future__ import annotations

import asyncio
import collections

from bridge import keys
from bridge.streams import StreamEvent, id_order

#: Events a subscription may hold unread before it is dropped (a stuck client).
MAX_QUEUED = 10_000


class Subscription:
    """One reader of one task stream: :meth:`get` the next event, in id order, no repeats.

    Waiting costs one future per wait and no timer: keep-alive wake-ups come from the hub's
    single heartbeat (per-reader timers and tasks, 10,000 at a time, are what made the
    garbage collector pause the relay for hundreds of milliseconds).
    """

    def __init__(self, task_id: str, after: str) -> None:
        self.task_id = task_id
        self.key = keys.stream(task_id)
        self.after = after
        self._last = id_order(after)
        self._items: collections.deque[StreamEvent] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._held: list[StreamEvent] | None = None  # live entries while the backlog is read
        #: Why the subscription stopped early (None while it runs): the client should reconnect.
        self.dropped: str | None = None
        self.ended = False

    def push(self, event: StreamEvent) -> None:
        if self.ended or self.dropped:
            return
        if self._held is not None:
            self._held.append(event)
            return
        order = id_order(event.id)
        if order <= self._last:
            return  # already delivered (the backlog and the loop overlap)
        self._last = order
        self._items.append(event)
        if event.eof:
            self.ended = True
        elif len(self._items) > MAX_QUEUED:
            self.drop("the client reads too slowly")
        self.wake()

    def drop(self, reason: str) -> None:
        if self.dropped is None and not self.ended:
            self.dropped = reason
            self.wake()

    def wake(self) -> None:
        """End the current :meth:`get` wait (an event, a drop, or a heartbeat)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float | None = None) -> StreamEvent | None:
        """The next event; None when woken without one (the hub's heartbeat, or ``timeout``
        s), once dropped, or after the end."""
        if not self._items and not self.dropped and not self.ended:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(timeout, self.wake) if timeout is not None else None
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self._items.popleft() if self._items else None
