"""The Celery-mode batch store in Redis: results per job plus a completion counter.

Keys (``bridge.keys.batch(batch_id, part)``):

- ``results``: hash ``index -> {"s": state, "a": attempt, "j": job_id, "r": output|error}``
  (first writer wins, so a redelivered task cannot count twice);
- ``done``: the completion counter; ``order``: indices in completion order (for
  ``as_completed``); ``meta``: per-state counts, ``enqueued``, ``total``;
- ``enqueued``: hash ``index -> attempt`` of the inputs handed to Celery (a re-run never
  enqueues them again; a cancel knows their task ids);
- ``attempts``: hash ``index -> next attempt`` of inputs forgotten after an endpoint-wide stop
  (their task ids were used, so a re-run must not reuse them).

Nothing is ever collected through a chord: the producer watches one counter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bridge import keys
from bridge.batch import store as st
from bridge.redis_clients import through_outage

_RECORD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

# Reopen a finished input (in state ARGV[2]) for resubmission: forget its record and its
# enqueued bit. With ARGV[3] = '1', only if no remote job was ever accepted for it, and the
# next attempt is remembered (the forgotten task id must not be used again).
_REOPEN = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec['s'] ~= ARGV[2] then return 0 end
if ARGV[3] == '1' then
  if rec['j'] and rec['j'] ~= cjson.null then return 0 end
  local nxt = tonumber(rec['a'] or 0)
  if rec['s'] ~= 'cancelled' then nxt = nxt + 1 end
  redis.call('HSET', KEYS[5], ARGV[1], nxt)
  redis.call('EXPIRE', KEYS[5], ARGV[4])
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DECR', KEYS[2])
redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
redis.call('HINCRBY', KEYS[3], 'enqueued', -1)
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

# Cancel a queued item only if its task has not started submitting (no gateway journal
# entry); the gateway's claim checks the cancel key in one step too, so there is no race.
_CANCEL_UNCLAIMED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
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
        self.k_attempts = keys.batch(batch_id, "attempts")
        self._record = client.register_script(_RECORD)
        self._reopen = client.register_script(_REOPEN)
        self._cancel_unclaimed = client.register_script(_CANCEL_UNCLAIMED)

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

    def enqueued_attempt(self, index: int) -> int | None:
        """The attempt ``index`` was last enqueued with (None: never enqueued)."""
        raw = self.r.hget(self.k_enqueued, index)
        return None if raw is None else int(raw)

    def mark_enqueued(self, index: int, attempt: int) -> None:
        def mark() -> None:
            pipe = self.r.pipeline()
            pipe.hset(self.k_enqueued, index, attempt)
            pipe.hincrby(self.k_meta, "enqueued", 1)
            pipe.expire(self.k_enqueued, self.ttl)
            pipe.execute()

        url = getattr(self.r, "outage_url", "")
        if url:  # a client that rides Redis restarts (riding_sync_client): the pipeline too
            through_outage(mark, url)
        else:
            mark()

    def reopen(self, index: int, state: str = st.CANCELLED) -> bool:
        """Forget a finished input in ``state`` so it is enqueued again (False: not in it)."""
        keys_ = [self.k_results, self.k_done, self.k_meta, self.k_enqueued, self.k_attempts]
        return bool(self._reopen(keys=keys_, args=[index, state, "0", self.ttl]))

    def forget_unaccepted(self, index: int, state: str) -> bool:
        """After an endpoint-wide stop: forget an input in ``state`` that never had a remote
        job (it becomes pending again), remembering its next attempt; False if it had one."""
        keys_ = [self.k_results, self.k_done, self.k_meta, self.k_enqueued, self.k_attempts]
        return bool(self._reopen(keys=keys_, args=[index, state, "1", self.ttl]))

    def has_forgotten(self) -> bool:
        return bool(self.r.exists(self.k_attempts))

    def remember_attempt(self, index: int, attempt: int) -> None:
        self.r.hset(self.k_attempts, index, attempt)
        self.r.expire(self.k_attempts, self.ttl)

    def next_attempt(self, index: int) -> int:
        """The attempt a forgotten input is enqueued with (0 for one never enqueued)."""
        return int(self.r.hget(self.k_attempts, index) or 0)

    def cancel_unclaimed(self, task_id: str, ttl: int = 86400) -> bool:
        """Set ``task_id``'s cancel key unless its task already began submitting."""
        return bool(self._cancel_unclaimed(keys=[keys.journal(task_id), keys.cancel(task_id)], args=[ttl]))

    def ensure_nonce(self, nonce: str) -> str | None:
        """The batch's idempotency nonce: the one stored, else ``nonce`` for a batch never
        enqueued before (None for a batch from before nonces: its task ids must not change)."""
        stored = self.get_meta("nonce")
        if stored is not None:
            return stored
        if self.enqueued_total() > 0 or self.r.exists(self.k_results):
            return None
        self.r.hsetnx(self.k_meta, "nonce", nonce)
        self.r.expire(self.k_meta, self.ttl)
        return self.get_meta("nonce")

    def unfinished_enqueued(self) -> Iterator[tuple[int, int]]:
        """(index, attempt) of the inputs handed to Celery that have no result yet."""
        for raw_index, raw_attempt in self.r.hscan_iter(self.k_enqueued, count=1000):
            index = int(raw_index)
            if not self.r.hexists(self.k_results, index):
                yield index, int(raw_attempt)
