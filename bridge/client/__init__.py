"""The endpoint client: ``Endpoint``/``Job`` (sync, requests) and ``AsyncioEndpoint``/
``AsyncioJob`` (asyncio, aiohttp), the SDK's names done right; plus the policies the
gateway builds on. See docs/client.md."""

from __future__ import annotations

from bridge.client._policy import PollPolicy, RetryPolicy
from bridge.client.aio import AsyncioEndpoint, AsyncioJob
from bridge.client.sync import Endpoint, Job

__all__ = ["AsyncioEndpoint", "AsyncioJob", "Endpoint", "Job", "PollPolicy", "RetryPolicy"]
