"""Writing a stream task's chunks to its Redis stream ``bridge:stream:{task_id}`` (field
``chunk``: JSON text, after the lifecycle's ``bridge_transform_chunk`` hooks) and the final ``eof``
entry (``status``, ``error`` if any) that tells readers the stream ended.
"""

from __future__ import annotations

import json
from typing import Any

from bridge import keys
from bridge.redis_clients import athrough_outage


class StreamWriter:
    def __init__(self, redis: Any, maxlen: int, ttl: int) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.ttl = ttl

    async def write(self, task_id: str, chunks: list[Any]) -> None:
        """Append chunks (already transformed by the lifecycle), one pipeline per batch."""
        key = keys.stream(task_id)

        async def write() -> Any:
            pipe = self.redis.pipeline(transaction=False)
            for chunk in chunks:
                pipe.xadd(key, {"chunk": json.dumps(chunk, default=str)}, maxlen=self.maxlen, approximate=True)
            pipe.expire(key, self.ttl)
            return await pipe.execute()

        # through a Redis restart (a pipeline cut by the restart may be sent twice)
        await athrough_outage(write, getattr(self.redis, "outage_url", ""))

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
