"""One Redis reader per process for every stream the relay serves.

:class:`StreamHub` fans each entry of a task stream out to every subscription on it, so
10,000 open event streams cost three Redis connections, not 10,000 (a pool of blocked readers
is what made idle streams starve live ones). It learns which streams moved in one of two ways:

- ``tracking`` (the default, Redis 6.0+): Redis names every modified stream key
  (:class:`bridge.stream_notify.TrackedKeys`) and the hub reads just the watched ones that
  moved, one XREAD at a time. A round costs what moved, however many streams are watched.
- ``xread`` (where Redis refuses ``CLIENT TRACKING``): one ``XREAD BLOCK`` over every watched
  stream, pre-packed on its own connection. A round costs Redis ~0.5 µs per watched stream.
  New streams wake the blocked loop by appending to a private wake stream it always reads,
  which cannot race the block.

A subscription starts after an entry id (``"0"``: the start). A stream nobody watches yet is
simply read from that id, backlog first; a second subscription to a watched stream from an
earlier id reads the gap with one ``XRANGE`` while live entries queue behind it (no entry lost
or repeated).

Redis outages are retried with backoff and one log line per outage (never a traceback per
reader); subscriptions stay open and resume where the hub left off (tracking re-reads every
watched stream after reconnecting, since notices may have been missed).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge import keys
from bridge.stream_notify import TrackedKeys
from bridge.stream_subscription import Subscription
from bridge.streams import BLOCK_MS, COUNT, StreamEvent, id_order, parse_entry

log = logging.getLogger("bridge.relay")

#: Errors after which the loop reconnects and retries (an outage, not a bug).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
#: Connections for backlog reads and wake-ups (short commands; the loop has its own).
POOL_SIZE = 8


def masked_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to print and log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _arg(value: str) -> bytes:
    """One RESP bulk-string argument."""
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class _Watch:
    """One stream in the loop: where it reads from, its readers, and its two XREAD arguments
    encoded once (a 10,000-key XREAD is then one bytes.join, not 20,000 encodes per round)."""

    __slots__ = ("key", "last", "subs", "key_arg", "id_arg")

    def __init__(self, key: str, last: str) -> None:
        self.key = key
        self.key_arg = _arg(key)
        self.subs: set[Subscription] = set()
        self.move(last)

    def move(self, last: str) -> None:
        self.last = last  # the loop reads after this id
        self.id_arg = _arg(last)


class StreamHub:
    """The process's stream multiplexer. ``await start()`` once, ``await close()`` at exit."""

    def __init__(self, redis_url: str, *, block_ms: int = BLOCK_MS, count: int = COUNT,
                 heartbeat: float = 15.0, tracking: bool = True) -> None:
        self.redis_url = redis_url
        self.tracking = tracking
        #: "tracking" (Redis names the streams that moved) or "xread" (one XREAD BLOCK over all).
        self.mode = "tracking" if tracking else "xread"
        self._feed: TrackedKeys | None = None
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self.block_ms = block_ms
        self.count = count
        self.heartbeat = heartbeat
        self._watches: dict[str, _Watch] = {}
        self._wake_key = f"{keys.prefix()}:relay:wake:{uuid.uuid4().hex}"
        self._wake = _Watch(self._wake_key, "0")  # read first in every XREAD, never a reader's
        self._wake_pending = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._reader_pool: Any = None
        self._conn: Any = None  # the loop's own connection, held for the hub's life
        self._pool: Any = None
        self._loop_task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._fetch_task: asyncio.Task[None] | None = None
        self._has_watches = asyncio.Event()
        self._down_since: float | None = None
        #: XREAD calls made (tests and the benchmark read it).
        self.reads = 0

    @property
    def watched(self) -> int:
        return len(self._watches)

    async def start(self) -> None:
        from bridge.redis_clients import async_client  # it imports masked_url from here

        # No socket timeout (XREAD blocks), TCP keepalive (a vanished peer still ends a read).
        self._reader_pool = async_client(self.redis_url).connection_pool
        self._conn = self._reader_pool.make_connection()
        # A blocking pool: a burst of resumes waits for a free connection instead of failing.
        self._pool = async_client(self.redis_url, POOL_SIZE)
        self._loop_task = asyncio.ensure_future(self._run())
        self._fetch_task = asyncio.ensure_future(self._fetch_dirty())
        self._beat_task = asyncio.ensure_future(self._beat())

    async def close(self) -> None:
        for own in (self._loop_task, self._beat_task, self._fetch_task):
            if own is not None:
                own.cancel()
                await asyncio.gather(own, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.drop_all("the relay is stopping")
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.delete(self._wake_key), 1)
            except (*REDIS_DOWN, asyncio.TimeoutError):
                pass  # it expires on its own
        if self._pool is not None:
            await self._pool.aclose()
        if self._conn is not None:
            await self._conn.disconnect()
            await self._reader_pool.disconnect()
        if self._feed is not None:
            await self._feed.close()

    def drop_all(self, reason: str) -> None:
        """End every subscription now (a stopping server need not wait for its streams)."""
        for watch in self._watches.values():
            for sub in watch.subs:
                sub.drop(reason)
        self._watches.clear()

    async def last_entry(self, task_id: str) -> StreamEvent | None:
        """The stream's last entry, if any (the relay answers a resume after the end with 204)."""
        entries = await self._pool.xrevrange(keys.stream(task_id), count=1)
        return parse_entry(*entries[0]) if entries else None

    async def subscribe(self, task_id: str, after: str = "0") -> Subscription:
        """Watch ``task_id``'s stream after entry ``after``; pair with :meth:`unsubscribe`."""
        sub = Subscription(task_id, after)
        watch = self._watches.get(sub.key)
        if watch is None:
            # Nobody reads this stream yet: the loop reads it from here, backlog first.
            watch = self._watches[sub.key] = _Watch(sub.key, after)
            watch.subs.add(sub)
            self._has_watches.set()
            if self.mode == "tracking":
                self._mark_dirty([sub.key])  # read its backlog now
            else:
                self._wake_loop()
            return sub
        watch.subs.add(sub)
        upto = watch.last
        if id_order(after) < id_order(upto):
            sub._held = []  # the loop's next entries wait behind the gap
            try:
                await self._fill(sub, after, upto)
            except REDIS_DOWN:
                sub.drop("Redis is unreachable")
        return sub

    async def _fill(self, sub: Subscription, after: str, upto: str) -> None:
        start = "-" if id_order(after) == (0, 0) else f"({after}"
        backlog: list[StreamEvent] = []
        while True:
            entries = await self._pool.xrange(sub.key, start, upto, count=self.count)
            backlog.extend(parse_entry(i, f) for i, f in entries)
            if len(entries) < self.count:
                break
            start = f"({backlog[-1].id}"
        held, sub._held = sub._held or [], None
        for event in (*backlog, *held):
            sub.push(event)

    def unsubscribe(self, sub: Subscription) -> None:
        watch = self._watches.get(sub.key)
        if watch is not None:
            watch.subs.discard(sub)
            if not watch.subs:
                del self._watches[sub.key]  # left out of the next XREAD

    def _wake_loop(self) -> None:
        """Make the blocked XREAD return so that it includes newly watched streams."""
        if self._wake_pending or self._pool is None:
            return
        self._wake_pending = True

        async def wake() -> None:
            try:
                pipe = self._pool.pipeline(transaction=False)
                pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1)
                pipe.expire(self._wake_key, 3600)
                await pipe.execute()
            except REDIS_DOWN:
                pass  # the loop is retrying; it reads the new streams when Redis is back

        task = asyncio.ensure_future(wake())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _beat(self) -> None:
        """Wake every reader once per heartbeat (they write a keep-alive comment), and check
        the tracking connection."""
        while True:
            await asyncio.sleep(self.heartbeat)
            for watch in list(self._watches.values()):
                for sub in list(watch.subs):
                    sub.wake()
            feed = self._feed
            if feed is not None and self.mode == "tracking" and self._down_since is None:
                try:
                    await asyncio.wait_for(feed.ping(), 10)
                except (*REDIS_DOWN, asyncio.TimeoutError, AttributeError):
                    await feed.abort()  # the feed reopens and re-reads everything

    # -- tracking mode: Redis names the streams that moved; read only those ----------------

    def _mark_dirty(self, changed: Any) -> None:
        self._dirty.update(changed)
        self._dirty_event.set()

    async def _run(self) -> None:
        if self.tracking and await self._run_tracked():
            return
        self.mode = "xread"
        if self._watches:
            self._wake_loop()
        await self._run_xread()

    async def _run_tracked(self) -> bool:
        """Follow invalidation notices until cancelled; False when Redis cannot track."""
        prefix = keys.stream("")
        self._feed = feed = TrackedKeys(self.redis_url, prefix)
        delay = 0.1
        while True:
            try:
                await feed.open()
            except ResponseError as exc:
                log.info("Redis cannot track keys (%s); reading streams with one XREAD over all", exc)
                await feed.close()
                self._feed = None
                return False
            except REDIS_DOWN as exc:
                self._outage(exc)
                await asyncio.sleep(delay)  # back off while Redis is away
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.1
            self._recovered()
            self._mark_dirty(self._watches)  # anything may have moved while no one listened
            try:
                while True:
                    changed = await feed.next()
                    if changed is None:
                        self._mark_dirty(self._watches)
                    else:
                        self._mark_dirty(k for k in changed if k in self._watches)
            except Exception as exc:  # whatever broke the feed: reopen, then re-read everything
                await feed.close()
                self._outage(exc)
                await asyncio.sleep(delay)

    async def _fetch_dirty(self) -> None:
        """Read the streams that moved (one XREAD at a time, so ids only move forward)."""
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            batch = [self._watches[k] for k in self._dirty if k in self._watches]
            self._dirty.clear()
            if not batch:
                continue
            try:
                self.reads += 1
                reply = await self._pool.xread({w.key: w.last for w in batch}, count=self.count)
            except REDIS_DOWN:
                self._dirty.update(w.key for w in batch)  # re-read once the feed is back
                continue
            except ResponseError:
                await self._drop_bad_keys()
                continue
            except Exception:  # a bug must not silence every stream: log it, keep reading
                log.exception("reading %d streams failed", len(batch))
                continue
            streams = list(reply.items() if isinstance(reply, dict) else reply or [])
            self._fan_out(streams)
            full = [_text(k) for k, entries in streams if len(entries) >= self.count]
            if full:
                self._mark_dirty(full)  # more than one XREAD's worth waiting

    # -- xread mode: one XREAD BLOCK over every watched stream -----------------------------

    def _packed_xread(self) -> bytes:
        watches = [self._wake, *self._watches.values()]
        head = [b"*%d\r\n" % (6 + 2 * len(watches)), _arg("XREAD"), _arg("COUNT"), _arg(str(self.count)),
                _arg("BLOCK"), _arg(str(self.block_ms)), _arg("STREAMS")]
        return b"".join([*head, *(w.key_arg for w in watches), *(w.id_arg for w in watches)])

    async def _run_xread(self) -> None:
        delay = 0.1
        while True:
            if not self._watches:
                self._has_watches.clear()
                await self._has_watches.wait()
            try:
                self.reads += 1
                # Sent pre-packed on the loop's own connection: redis-py's packing costs
                # ~1 µs per argument, 20 ms per round at 10,000 streams.
                await self._conn.send_packed_command(self._packed_xread(), check_health=False)
                reply = await self._conn.read_response()
            except REDIS_DOWN as exc:
                self._wake_pending = False
                await self._conn.disconnect()
                self._outage(exc)
                await asyncio.sleep(delay)  # back off while Redis is away
                delay = min(delay * 2, 2.0)
                continue
            except ResponseError as exc:
                # One key that is not a stream fails the whole XREAD: drop its readers only.
                self._wake_pending = False
                try:
                    dropped = await self._drop_bad_keys()
                except REDIS_DOWN:
                    dropped = 0
                if not dropped:
                    log.error("XREAD failed: %s", exc)
                    await asyncio.sleep(1.0)
                continue
            delay = 0.1
            self._wake_pending = False
            self._recovered()
            if reply:
                self._fan_out(reply.items() if isinstance(reply, dict) else reply)

    def _fan_out(self, reply: Any) -> None:
        for raw_key, entries in reply:
            key = _text(raw_key)
            watch = self._wake if key == self._wake_key else self._watches.get(key)
            if watch is None:
                continue  # every reader left while the read was in flight
            for entry_id, flat in entries:
                fields = dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else flat
                event = parse_entry(entry_id, fields)
                watch.move(event.id)
                for sub in list(watch.subs):
                    sub.push(event)
                if event.eof and watch is not self._wake:
                    del self._watches[key]  # the stream ended; later readers re-read it
                    break

    async def _drop_bad_keys(self) -> int:
        watched = list(self._watches)
        pipe = self._pool.pipeline(transaction=False)
        for key in watched:
            pipe.type(key)
        kinds = await pipe.execute()
        dropped = 0
        for key, kind in zip(watched, kinds, strict=True):
            if (kind.decode() if isinstance(kind, bytes) else str(kind)) not in ("stream", "none"):
                watch = self._watches.pop(key, None)
                for sub in watch.subs if watch else ():
                    sub.drop(f"{key} is not a stream")
                dropped += 1
        return dropped

    def _recovered(self) -> None:
        if self._down_since is not None:
            self._down_since = None
            log.warning("Redis at %s is reachable again; streams resume", masked_url(self.redis_url))

    def _outage(self, exc: BaseException) -> None:
        import time

        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("Redis at %s is unreachable (%s); streams wait and the relay retries",
                        masked_url(self.redis_url), type(exc).__name__)

