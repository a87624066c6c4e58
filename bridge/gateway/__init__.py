"""The gateway: bridge's core, with no Celery in it.

The one job lifecycle (:mod:`bridge.lifecycle`) for Celery tasks, plus what a worker adds:
the Redis journal, cancel keys, Redis-shared rate budgets, webhooks and stream entries.
See :mod:`bridge.gateway.core` for the walk of one job.
"""

from __future__ import annotations

from typing import Any

from bridge import keys
from bridge.gateway.settings import GatewaySettings
from bridge.redis_clients import riding_sync_client

__all__ = ["GatewaySettings", "cancel_task", "get_gateway"]


def cancel_task(task_id: str, *, redis_url: str | None = None) -> None:
    """Cancel the remote job of bridge task ``task_id``, whatever state it is in.

    Sets the gateway-owned cancel key ``bridge:cancel:{task_id}``: a task still queued never
    submits, a waiting task cancels its remote job within the gateway's cancel check
    (0.25 s by default) and ends REVOKED. Works with no worker listening (unlike a revoke
    broadcast): the key is read when the task runs. Call ``AsyncResult.revoke()`` as well
    to have Celery discard a queued message at once.
    """
    settings = GatewaySettings()
    client = riding_sync_client(redis_url or settings.redis_url)  # through a Redis restart
    try:
        client.set(keys.cancel(task_id), "1", ex=settings.journal_ttl)
    finally:
        client.close()


def get_gateway() -> Any:
    from bridge.gateway.core import get_gateway as _get

    return _get()
