"""Which stream keys changed, told by Redis itself: client-side-caching invalidations.

``CLIENT TRACKING ON BCAST PREFIX bridge:stream: REDIRECT <id>`` makes Redis (6.0 and later,
no server setting needed) send the name of every key under the prefix that any client
modifies to one subscribed connection, on the ``__redis__:invalidate`` channel. The relay's
hub then reads just those streams, so a round costs the streams that moved, not every
stream it watches (an XREAD over 10,000 keys costs Redis ~5 ms however few have data).

Two connections: one subscribed (it receives), one that holds the tracking state (Redis
redirects its invalidations to the first). Either one lost means notices may have been
missed: :meth:`TrackedKeys.next` raises, and the hub re-reads every stream it watches after
reopening.
"""

from __future__ import annotations

from typing import Any

CHANNEL = "__redis__:invalidate"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TrackedKeys:
    """A feed of modified key names under ``prefix``."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        from bridge.redis_clients import async_client

        self.prefix = prefix
        # RESP2 on purpose: invalidations then arrive as plain pub/sub messages. No socket
        # timeout (the listener waits as long as nothing changes); TCP keepalive instead.
        self._pool = async_client(redis_url, protocol=2).connection_pool
        self._listener: Any = None
        self._tracker: Any = None

    async def open(self) -> None:
        """Subscribe and start tracking. Raises ``redis.exceptions.ResponseError`` when the
        server cannot track (Redis before 6.0, an ACL), connection errors when it is down."""
        await self.close()
        self._listener = self._pool.make_connection()
        self._tracker = self._pool.make_connection()
        await self._listener.send_command("CLIENT", "ID")
        client_id = int(await self._listener.read_response())
        await self._listener.send_command("SUBSCRIBE", CHANNEL)
        await self._listener.read_response()  # ["subscribe", channel, 1]
        await self._tracker.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST",
                                         "PREFIX", self.prefix)
        await self._tracker.read_response()

    async def next(self) -> list[str] | None:
        """The keys of the next notice; None when every key may have changed (a FLUSHALL)."""
        while True:
            message = await self._listener.read_response()
            if isinstance(message, list) and len(message) == 3 and _text(message[0]) == "message":
                changed = message[2]
                return None if changed is None else [_text(k) for k in changed]

    async def ping(self) -> None:
        """Check the tracking connection (its loss would silence the feed without an error)."""
        await self._tracker.send_command("PING")
        await self._tracker.read_response()

    async def abort(self) -> None:
        """Make a pending :meth:`next` fail (the hub then reopens and re-reads)."""
        if self._listener is not None:
            await self._listener.disconnect()

    async def close(self) -> None:
        for conn in (self._listener, self._tracker):
            if conn is not None:
                await conn.disconnect()
        self._listener = self._tracker = None
