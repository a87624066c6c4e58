"""How a bridge task starts: read the task's state in the result backend and, unless it
is already final (SUCCESS: a late duplicate; REVOKED: a revoke this worker missed), mark
it STARTED so other workers leave it alone (Celery 5.7). On the Redis backend that is one
atomic round trip (Celery's own ``store_result`` is a GET and then a SET+PUBLISH); other
backends take the generic path.
"""

from __future__ import annotations

from typing import Any

from celery import states

# KEYS[1] the task's meta key; ARGV: STARTED meta, expiry seconds (0 = none). Returns the
# current meta when it is SUCCESS or REVOKED, else stores STARTED and returns nil.
_BEGIN = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, meta = pcall(cjson.decode, cur)
  if ok and type(meta) == 'table' then
    if meta['status'] == 'SUCCESS' or meta['status'] == 'REVOKED' then return cur end
  elseif string.find(cur, '"status": "SUCCESS"', 1, true) or string.find(cur, '"status": "REVOKED"', 1, true) then
    return cur
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return false
"""
_scripts: dict[int, Any] = {}
_ascripts: dict[int, Any] = {}


def begin(backend: Any, request: Any, task_id: str) -> dict[str, Any]:
    """The backend meta when task ``task_id`` is already SUCCESS or REVOKED, else ``{}``
    after marking it STARTED. ``request``: the task's request context (Celery's
    ``task.request``, or a worker request's ``_context``)."""
    client = getattr(backend, "client", None)
    if type(backend).__name__ in ("RedisBackend", "SentinelBackend") and client is not None \
            and backend.serializer == "json":
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(_BEGIN)
        meta = backend._get_result_meta(result=None, state=states.STARTED, traceback=None, request=request)
        meta["task_id"] = task_id
        expires = int(backend.expires or 0)
        current = script(keys=[backend.get_key_for_task(task_id)], args=[backend.encode(meta), expires])
        return dict(backend.decode_result(current)) if current else {}
    meta = backend.get_task_meta(task_id)
    if meta.get("status") in (states.SUCCESS, states.REVOKED):
        return dict(meta)
    backend.store_result(task_id, None, states.STARTED, request=request)
    return {}


def redis_begin_args(backend: Any, request: Any, task_id: str, redis_url: str) -> tuple[str, bytes, int] | None:
    """What :func:`abegin` sends for ``task_id`` (key, encoded STARTED meta, expiry), when
    the backend is Redis with JSON on the same server and database as ``redis_url`` (the
    gateway's); None otherwise (then the sync :func:`begin` runs)."""
    if type(backend).__name__ != "RedisBackend" or backend.serializer != "json":
        return None
    params = getattr(backend, "connparams", None) or {}
    from redis.connection import parse_url

    try:
        ours = parse_url(redis_url)
    except ValueError:
        return None
    if (params.get("host"), int(params.get("port") or 6379), int(params.get("db") or 0)) != (
            ours.get("host"), int(ours.get("port") or 6379), int(ours.get("db") or 0)):
        return None
    meta = backend._get_result_meta(result=None, state=states.STARTED, traceback=None, request=request)
    meta["task_id"] = task_id
    return backend.get_key_for_task(task_id), backend.encode(meta), int(backend.expires or 0)


async def abegin(redis: Any, batch: Any, backend: Any, args: tuple[str, bytes, int]) -> dict[str, Any]:
    """:func:`begin` on an event loop, auto-pipelined with the gateway's other Redis commands
    (``batch``: the journal's :class:`~bridge.gateway.journal.Batcher`)."""
    script = _ascripts.get(id(redis))
    if script is None:
        script = _ascripts[id(redis)] = redis.register_script(_BEGIN)
    key, encoded, expires = args
    current = await batch.run_script(script, [key], [encoded, expires])
    return dict(backend.decode_result(current)) if current else {}
