"""Writing a stream task's chunks to its Redis stream ``bridge:stream:{task_id}`` (field
``chunk``: JSON text, after the ``bridge_transform_chunk`` hooks) and the final ``eof``
entry (``status``, ``error`` if any) that tells readers the stream ended.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from bridge import keys
from bridge.hooks import Hooks, JobContext
from bridge.redis_clients import athrough_outage

Sink = Callable[[list[Any]], Awaitable[list[Any]]]


class StreamWriter:
    def __init__(self, redis: Any, hooks: Hooks, maxlen: int, ttl: int) -> None:
        self.redis = redis
        self.hooks = hooks
        self.maxlen = maxlen
        self.ttl = ttl

    def sink(self, task_id: str, ctx: JobContext) -> Sink:
        """Transform and append chunks (one pipeline per batch); returns what was written."""
        key = keys.stream(task_id)

        async def sink(chunks: list[Any]) -> list[Any]:
            out = [await self.hooks.atransform_chunk(ctx, c) for c in chunks]

            async def write() -> Any:
                pipe = self.redis.pipeline(transaction=False)
                for chunk in out:
                    pipe.xadd(key, {"chunk": json.dumps(chunk, default=str)}, maxlen=self.maxlen, approximate=True)
                pipe.expire(key, self.ttl)
                return await pipe.execute()

            # through a Redis restart (a pipeline cut by the restart may be sent twice)
            await athrough_outage(write, getattr(self.redis, "outage_url", ""))
            return out

        return sink

    async def so_far(self, task_id: str) -> list[Any]:
        """Chunks an earlier delivery already drained from /stream (a resumed stream)."""
        entries: Any = await self.redis.xrange(keys.stream(task_id))
        return [json.loads(f[b"chunk"]) for _, f in entries or () if b"chunk" in f]

    async def eof(self, task_id: str, status: str, error: str) -> None:
        """The last entry: readers stop here (``status``; ``error`` when the job failed)."""
        fields: dict[Any, Any] = {"eof": "1", "status": status}
        if error:
            fields["error"] = error
        await self.redis.xadd(keys.stream(task_id), fields)


def collecting(sink: Sink, aggregate: list[Any]) -> Callable[[list[Any]], Awaitable[None]]:
    """``sink`` that also keeps every written chunk in ``aggregate`` (the task's result)."""

    async def collect(chunks: list[Any]) -> None:
        aggregate.extend(await sink(chunks))

    return collect
