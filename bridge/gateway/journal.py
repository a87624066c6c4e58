"""The journal: which remote job each Celery task owns, kept in Redis under
``bridge:job:{task_id}`` (a hash) so a redelivered task resumes instead of paying twice.

Fields: ``job_id``, ``endpoint_id``, ``base_url``, ``state`` (SUBMITTING, SUBMITTED or the
job's terminal status, or REVOKED), ``claim``/``claim_at`` (who is submitting, since when),
``cancel_sent`` (the one /cancel this task may send), ``error`` (a scrubbed error name).
Only ids, statuses and error class names are stored here: never inputs or secrets.
"""

from __future__ import annotations

import time
from typing import Any

from bridge import keys

# One round trip decides what a delivery does: resume a recorded job, submit (claim taken),
# wait for a live claim, or stop because the task was cancelled before it submitted.
_CLAIM = """
local jid = redis.call('HGET', KEYS[1], 'job_id')
if jid then return {'resume', jid} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'cancelled', ''} end
local at = redis.call('HGET', KEYS[1], 'claim_at')
if at and (tonumber(ARGV[1]) - tonumber(at)) < tonumber(ARGV[2]) then return {'wait', ''} end
redis.call('HSET', KEYS[1], 'claim', ARGV[3], 'claim_at', ARGV[1], 'endpoint_id', ARGV[4],
           'base_url', ARGV[5], 'state', 'SUBMITTING')
redis.call('EXPIRE', KEYS[1], ARGV[6])
return {'claimed', ''}
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Journal:
    """Async access to the journal (redis.asyncio client); all methods are one round trip."""

    def __init__(self, redis: Any, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._claim = redis.register_script(_CLAIM)

    async def claim(
        self, task_id: str, endpoint_id: str, base_url: str, token: str, lease: float
    ) -> tuple[str, str | None]:
        """('resume', job_id) | ('claimed', None) | ('wait', None) | ('cancelled', None)."""
        action, job_id = await self._claim(
            keys=[keys.journal(task_id), keys.cancel(task_id)],
            args=[f"{time.time():.3f}", lease, token, endpoint_id, base_url, self.ttl],
        )
        return _s(action), (_s(job_id) or None)

    async def record(self, task_id: str, job_id: str) -> None:
        """Write the job id the moment /run answered: from here on a redelivery resumes."""
        await self.redis.hset(
            keys.journal(task_id),
            mapping={"job_id": job_id, "state": "SUBMITTED", "submitted_at": f"{time.time():.3f}"},
        )

    async def finish(self, task_id: str, state: str, error: str | None = None) -> None:
        mapping = {"state": state, "finished_at": f"{time.time():.3f}"}
        if error:
            mapping["error"] = error
        await self.redis.hset(keys.journal(task_id), mapping=mapping)

    async def release(self, task_id: str) -> None:
        """Drop a claim that never submitted (invalid input, refused): a retry may claim again."""
        await self.redis.hdel(keys.journal(task_id), "claim", "claim_at")

    async def cancel_once(self, task_id: str) -> bool:
        """True for exactly one caller per task: the one that may POST /cancel."""
        return bool(await self.redis.hsetnx(keys.journal(task_id), "cancel_sent", f"{time.time():.3f}"))

    async def get(self, task_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(keys.journal(task_id))
        return {_s(k): _s(v) for k, v in raw.items()}


def read(redis_sync: Any, task_id: str) -> dict[str, str]:
    """The journal entry of ``task_id`` through a sync redis client (CLI, tests, janitor)."""
    raw = redis_sync.hgetall(keys.journal(task_id))
    return {_s(k): _s(v) for k, v in raw.items()}
