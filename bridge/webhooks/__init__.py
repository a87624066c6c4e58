"""Webhooks instead of polling.

``WebhookReceiver(public_url)`` describes a receiver you run (``bridge relay --webhooks``,
or :func:`bridge.webhooks.receiver.add_routes` in your own aiohttp app) and expose at
``public_url``. Pass it to ``bridge.batch(..., webhooks=receiver)``: every job is submitted
with ``{public_url}/webhooks/{ref}?token={per-job secret}`` and completes when its webhook
arrives; jobs whose webhook never comes are picked up by slow polling.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import env_float
from bridge.webhooks.secrets import strip_body, strip_secret
from bridge.webhooks.waiter import WebhookWaiter

__all__ = ["WebhookReceiver", "WebhookWaiter", "from_settings", "strip_body", "strip_secret"]


@dataclass
class WebhookReceiver:
    """Where RunPod can reach the receiver, and the Redis it shares with it.

    ``fallback_after``/``fallback_interval``: seconds before the first status look for a job
    whose webhook has not come, and between later looks (BRIDGE_WEBHOOK_FALLBACK, default 60).
    ``relay``: your own webhook URL; verified bodies are forwarded to it.
    """

    public_url: str
    redis_url: str | None = None
    fallback_after: float | None = None
    fallback_interval: float | None = None
    relay: str | None = None

    def waiter(self) -> WebhookWaiter:
        from bridge.gateway.settings import default_redis_url

        fallback = env_float("BRIDGE_WEBHOOK_FALLBACK", 60.0)
        return WebhookWaiter(
            self.public_url,
            self.redis_url or default_redis_url(),
            fallback_after=self.fallback_after if self.fallback_after is not None else fallback,
            fallback_interval=self.fallback_interval if self.fallback_interval is not None else fallback,
            relay=self.relay,
        )


def from_settings(redis_url: str | None = None) -> WebhookWaiter | None:
    """The process's webhook waiter when ``BRIDGE_WEBHOOK_URL`` (the receiver's public URL)
    is set, else None (webhooks off). For the gateway: one per process, see docs/batch.md."""
    import os

    public_url = os.environ.get("BRIDGE_WEBHOOK_URL")
    if not public_url:
        return None
    return WebhookReceiver(public_url, redis_url).waiter()
