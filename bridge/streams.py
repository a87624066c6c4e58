"""Reading a bridge task's chunks from its Redis Stream (``bridge:stream:{task_id}``).

``bridge.stream`` tasks append one entry per chunk (field ``chunk``: JSON text) and a last
entry with ``eof``="1", ``status`` and, on failure, ``error``. Entries stay in the stream, so
every reader sees every chunk: several readers at once, a late joiner from the start, or a
reconnecting browser from the last id it saw (SSE ``Last-Event-ID``)::

    for event in bridge.read_stream(task_id):          # from the start, live until the end
        if event.eof:
            print("ended", event.status, event.error)
        else:
            print(event.chunk)

``from_id``: ``"0"`` (the start, default), ``"$"`` (only what arrives from now on) or an entry
id (everything *after* it). ``live=False`` returns what is there now without waiting.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from bridge import errors, keys

#: How long one XREAD blocks (ms); readers re-check their deadline between blocks. Kept well
#: under redis-py's default 5 s socket timeout, which would otherwise cut a blocked read.
BLOCK_MS = 2000
#: Entries fetched per XREAD.
COUNT = 500


@dataclass(frozen=True)
class StreamEvent:
    """One stream entry: a chunk, or (``eof``) the end with the task's terminal status."""

    id: str
    chunk: Any = None
    eof: bool = False
    status: str | None = None
    error: Any = None

    def to_json(self) -> dict[str, Any]:
        if self.eof:
            return {"eof": True, "status": self.status, "error": self.error}
        return {"chunk": self.chunk}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_entry(entry_id: Any, fields: dict[Any, Any]) -> StreamEvent:
    data = {_text(k): _text(v) for k, v in fields.items()}
    eid = _text(entry_id)
    if data.get("eof") == "1":
        error: Any = data.get("error") or None
        if error is not None:
            try:
                error = json.loads(error)
            except ValueError:
                pass  # plain text error
        return StreamEvent(eid, eof=True, status=data.get("status") or None, error=error)
    raw = data.get("chunk")
    return StreamEvent(eid, chunk=None if raw is None else json.loads(raw))


def id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``, or ``ms``, or ``0``) as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def is_entry_id(text: str) -> bool:
    """Whether ``text`` is a stream entry id a reader may start after (``0``, ``ms`` or ``ms-seq``)."""
    ms, dash, seq = text.partition("-")
    return ms.isdigit() and len(ms) <= 20 and (not dash or (seq.isdigit() and len(seq) <= 20))


def _redis_url(redis_url: str | None) -> str:
    if redis_url:
        return redis_url
    from bridge.gateway.settings import default_redis_url

    return default_redis_url()


def _start(from_id: str | None) -> str:
    return "0" if from_id in (None, "", "0", "0-0") else str(from_id)


def _tail(entries: Any) -> tuple[str, StreamEvent | None]:
    """The id to read after for ``from_id="$"``, and the end event if the stream has ended."""
    if not entries:
        return "0", None
    event = parse_entry(*entries[0])
    return event.id, (event if event.eof else None)


def _timed_out(task_id: str, timeout: float | None) -> errors.Timeout:
    return errors.Timeout(
        f"no stream entry for task {task_id} within {timeout} s", None, None,
        "that the task exists and is running (bridge.stream), and the timeout", timeout,
    )


class _Cursor:
    """What both readers share: where to read from, how long to block, when to stop."""

    def __init__(self, task_id: str, last: str, live: bool, timeout: float | None) -> None:
        self.task_id = task_id
        self.last = last
        self.live = live
        self.timeout = timeout
        self.ended = False
        self.idle_since = time.monotonic()

    def block(self) -> int | None:
        """XREAD's BLOCK in ms (None: don't block)."""
        if not self.live:
            return None
        if self.timeout is None:
            return BLOCK_MS
        left = self.idle_since + self.timeout - time.monotonic()
        return max(1, min(BLOCK_MS, int(left * 1000)))

    def take(self, reply: Any) -> list[StreamEvent] | None:
        """The events in an XREAD reply (up to the end entry); [] to read again; None to stop
        (not live and nothing new). Raises :class:`bridge.errors.Timeout` past the timeout."""
        if not reply:
            if not self.live:
                return None
            if self.timeout is not None and time.monotonic() - self.idle_since >= self.timeout:
                raise _timed_out(self.task_id, self.timeout)
            return []
        self.idle_since = time.monotonic()
        events = []
        for entry_id, fields in reply[0][1]:
            event = parse_entry(entry_id, fields)
            self.last = event.id
            events.append(event)
            if event.eof:
                self.ended = True
                break
        return events


def read_stream(
    task_id: str,
    *,
    from_id: str = "0",
    live: bool = True,
    timeout: float | None = None,
    redis_url: str | None = None,
    client: Any = None,
) -> Iterator[StreamEvent]:
    """Iterate a task's stream; ends after the ``eof`` entry (or, with ``live=False``, at the
    current end). ``timeout``: longest wait for the next entry, then :class:`bridge.errors.Timeout`."""
    import redis

    own = client is None
    r = client if client is not None else redis.Redis.from_url(_redis_url(redis_url))
    key = keys.stream(task_id)
    last = _start(from_id)
    try:
        if last == "$":
            # Resolve "$" once so entries between two XREADs are not skipped; a stream that
            # already ended yields just its end.
            tail = r.xrevrange(key, count=1)
            last, ended = _tail(tail)
            if ended is not None:
                yield ended
                return
        cursor = _Cursor(task_id, last, live, timeout)
        while not cursor.ended:
            events = cursor.take(r.xread({key: cursor.last}, count=COUNT, block=cursor.block()))
            if events is None:
                return
            yield from events
    finally:
        if own:
            r.close()


async def aread_stream(
    task_id: str,
    *,
    from_id: str = "0",
    live: bool = True,
    timeout: float | None = None,
    redis_url: str | None = None,
    client: Any = None,
) -> AsyncIterator[StreamEvent]:
    """The async twin of :func:`read_stream` (redis.asyncio)."""
    import redis.asyncio as aredis

    own = client is None
    r = client if client is not None else aredis.Redis.from_url(_redis_url(redis_url))
    key = keys.stream(task_id)
    last = _start(from_id)
    try:
        if last == "$":
            last, ended = _tail(await r.xrevrange(key, count=1))
            if ended is not None:
                yield ended
                return
        cursor = _Cursor(task_id, last, live, timeout)
        while not cursor.ended:
            events = cursor.take(await r.xread({key: cursor.last}, count=COUNT, block=cursor.block()))
            if events is None:
                return
            for event in events:
                yield event
    finally:
        if own:
            await r.aclose()
