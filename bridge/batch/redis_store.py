"""The Celery-mode batch store in Redis: results per job plus a completion counter.

Keys (``bridge.keys.batch(batch_id, part)``):

- ``results``: hash ``index -> {"s": state, "a": attempt, "j": job_id, "r": output|error}``
  (first writer wins, so a redelivered task cannot count twice);
- ``done``: the completion counter; ``order``: indices in completion order (for
  ``as_completed``); ``meta``: per-state counts, ``enqueued``, ``total``;
- ``enqueued``: hash ``index -> attempt`` of the inputs handed to Celery (a re-run never
  enqueues them again; a cancel knows their task ids).

Nothing is ever collected through a chord: the producer watches one counter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bridge import keys
from bridge.batch import store as st

_RECORD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

# Reopen a cancelled input for resubmission: forget its record and its enqueued bit.
_REOPEN = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if cjson.decode(raw)['s'] ~= 'cancelled' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DECR', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'cancelled', -1)
redis.call('HINCRBY', KEYS[3], 'enqueued', -1)
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""


def _decode(raw: Any) -> dict[str, Any] | None:
    return None if raw is None else json.loads(raw)


class RedisStore:
    """A batch's results in Redis through a sync client (workers and the producer)."""

    def __init__(self, client: Any, batch_id: str, *, ttl: int = 7 * 86400) -> None:
        self.r = client
        self.batch_id = batch_id
        self.ttl = ttl
        self.k_results = keys.batch(batch_id, "results")
        self.k_done = keys.batch(batch_id, "done")
        self.k_order = keys.batch(batch_id, "order")
        self.k_meta = keys.batch(batch_id, "meta")
        self.k_enqueued = keys.batch(batch_id, "enqueued")
        self._record = client.register_script(_RECORD)
        self._reopen = client.register_script(_REOPEN)

    # -- Store protocol ----------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        value = self.r.hget(self.k_meta, key)
        return None if value is None else value.decode()

    def set_meta(self, key: str, value: str) -> None:
        self.r.hset(self.k_meta, key, value)
        self.r.expire(self.k_meta, self.ttl)

    def _write(self, index: int, state: str, attempt: int, job_id: str | None, result: Any) -> bool:
        value = json.dumps({"s": state, "a": attempt, "j": job_id, "r": result})
        keys_ = [self.k_results, self.k_done, self.k_order, self.k_meta]
        return bool(self._record(keys=keys_, args=[index, value, state, self.ttl]))

    def submitted(self, index: int, attempt: int, job_id: str) -> None:
        pass  # the gateway's journal (bridge:job:{task_id}) holds in-flight job ids

    def finished(self, index: int, state: str, attempt: int, job_id: str | None, result: Any) -> None:
        self._write(index, state, attempt, job_id, result)

    def cancelled(self, index: int, attempt: int, job_id: str | None) -> None:
        self._write(index, st.CANCELLED, attempt, job_id, None)

    @staticmethod
    def _item(index: int, data: dict[str, Any]) -> st.Item:
        return st.Item(index, data["s"], int(data.get("a", 0)), data.get("j"), data.get("r"))

    def get(self, index: int) -> st.Item | None:
        data = _decode(self.r.hget(self.k_results, index))
        return None if data is None else self._item(index, data)

    def items(self, start: int = 0) -> Iterator[st.Item]:
        total = int(self.get_meta("total") or 0)
        for first in range(start, total, 1000):
            indices = list(range(first, min(total, first + 1000)))
            for index, raw in zip(indices, self.r.hmget(self.k_results, indices), strict=True):
                data = _decode(raw)
                if data is not None:
                    yield self._item(index, data)

    def completed_since(self, seq: int, limit: int = 1000) -> tuple[int, list[st.Item]]:
        indices = [int(i) for i in self.r.lrange(self.k_order, seq, seq + limit - 1)]
        if not indices:
            return seq, []
        items = []
        for index, raw in zip(indices, self.r.hmget(self.k_results, indices), strict=True):
            data = _decode(raw)
            if data is not None:  # None: a cancelled input reopened for a re-run
                items.append(self._item(index, data))
        return seq + len(indices), items

    def counts(self) -> dict[str, int]:
        raw = self.r.hgetall(self.k_meta)
        out = {}
        for k, v in raw.items():
            name = k.decode()
            if name in (st.DONE, st.FAILED, st.CANCELLED):
                out[name] = int(v)
        return out

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.r.close()

    # -- producer side -----------------------------------------------------------------------
    def finished_total(self) -> int:
        return int(self.r.get(self.k_done) or 0)

    def enqueued_total(self) -> int:
        return int(self.r.hget(self.k_meta, "enqueued") or 0)

    def was_enqueued(self, index: int) -> bool:
        return bool(self.r.hexists(self.k_enqueued, index))

    def mark_enqueued(self, index: int, attempt: int) -> None:
        pipe = self.r.pipeline()
        pipe.hset(self.k_enqueued, index, attempt)
        pipe.hincrby(self.k_meta, "enqueued", 1)
        pipe.expire(self.k_enqueued, self.ttl)
        pipe.execute()

    def reopen(self, index: int) -> bool:
        keys_ = [self.k_results, self.k_done, self.k_meta, self.k_enqueued]
        return bool(self._reopen(keys=keys_, args=[index]))

    def unfinished_enqueued(self) -> Iterator[tuple[int, int]]:
        """(index, attempt) of the inputs handed to Celery that have no result yet."""
        for raw_index, raw_attempt in self.r.hscan_iter(self.k_enqueued, count=1000):
            index = int(raw_index)
            if not self.r.hexists(self.k_results, index):
                yield index, int(raw_attempt)
