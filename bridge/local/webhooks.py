"""Webhook delivery: POST a finished job's status-shaped body (plus ``input`` and ``webhook``).

Like RunPod: sent on every terminal state, the receiver must answer 2xx, and a failed
delivery is tried ``retries`` more times, ``delay`` seconds apart (2 and 10 s by default;
tests shorten the delay). Each attempt's outcome (HTTP status or error name) is kept on
the job for ``/_bridge/jobs/{id}``.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from bridge import errors
from bridge.local import bodies
from bridge.local.jobs import LocalJob

log = logging.getLogger(__name__)


class WebhookSender:
    def __init__(self, *, retries: int = 2, delay: float = 10.0, timeout: float = 10.0) -> None:
        self.retries = retries
        self.delay = delay
        self.timeout = timeout
        self.delivered = 0
        self.failed = 0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def job_finished(self, job: LocalJob) -> None:
        """Terminal-state listener for a JobStore."""
        if not job.webhook:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(job, job.webhook, job.webhook_body()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job: LocalJob, url: str, body: dict[str, object]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                                  json_serialize=bodies.dumps)
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.delay)
            try:
                async with self._session.post(url, json=body) as response:
                    job.webhook_attempts.append(response.status)
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                job.webhook_attempts.append(type(exc).__name__)
        self.failed += 1
        log.warning("webhook for job %s failed after %d attempts: %s", job.id, self.retries + 1,
                    errors.scrub(url))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
