"""One local-endpoint job: its fields and how RunPod's routes render it.

``status_body`` is ``/status``'s answer, ``drain`` is ``/stream``'s (chunks since the last
read), ``webhook_body`` is what a webhook receives, ``describe`` feeds ``/_bridge/jobs/{id}``.
The :class:`~bridge.local.jobs.JobStore` owns every change of state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.job_status import is_terminal

#: Marks "no output" (a handler returning ``{}`` completes with no output key).
MISSING: Any = object()


@dataclass(eq=False)
class LocalJob:
    id: str
    input: Any
    webhook: str | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    s3_config: dict[str, Any] | None = None
    sync: bool = False
    low_priority: bool = False
    execution_timeout: float = 600.0  # seconds
    ttl: float = 86400.0  # seconds
    retention: float = 1800.0  # seconds a terminal job stays readable
    idempotency_key: str | None = None
    status: str = "IN_QUEUE"
    output: Any = MISSING
    error: str | None = None
    progress: Any = MISSING
    chunks: list[Any] = field(default_factory=list)
    cursor: int = 0  # /stream drain position
    submitted_at: float = field(default_factory=time.monotonic)
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    enqueued: int = 0
    stopped: bool = False
    webhook_attempts: list[int | str] = field(default_factory=list)
    _stop_callbacks: list[Callable[[str], Any]] = field(default_factory=list, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict, repr=False)

    @property
    def terminal(self) -> bool:
        return is_terminal(self.status)

    def payload(self) -> dict[str, Any]:
        """What a handler receives: id, input and the request keys RunPod forwards."""
        job: dict[str, Any] = {"id": self.id, "input": self.input}
        if self.webhook is not None:
            job["webhook"] = self.webhook
        if self.policy:
            job["policy"] = self.policy
        if self.s3_config is not None:
            job["s3Config"] = self.s3_config
        return job

    def _times(self, body: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.started_at is not None:
            body["delayTime"] = int((self.started_at - self.queued_at) * 1000)
            body["executionTime"] = int(((self.finished_at or now) - self.started_at) * 1000)
        elif self.terminal:
            body["delayTime"] = int(((self.finished_at or now) - self.queued_at) * 1000)
            body["executionTime"] = 0

    def status_body(self) -> dict[str, Any]:
        """The ``/status`` body, RunPod's shape."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        self._times(body)
        if self.terminal:
            if self.output is not MISSING:
                body["output"] = self.output
            if self.error is not None:
                body["error"] = self.error
        elif self.status == "IN_PROGRESS" and self.progress is not MISSING:
            body["output"] = self.progress
        return body

    def webhook_body(self) -> dict[str, Any]:
        body = self.status_body()
        body["input"] = self.input
        body["webhook"] = self.webhook
        return body

    def drain(self) -> dict[str, Any]:
        """The ``/stream`` body: chunks since the last read, then the terminal status with []."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        self._times(body)
        body["stream"] = [{"output": c} for c in self.chunks[self.cursor :]]
        self.cursor = len(self.chunks)
        if self.terminal and self.error is not None:
            body["error"] = self.error
        return body

    def describe(self) -> dict[str, Any]:
        """Everything about the job, for the test-only ``/_bridge/jobs/{id}`` route."""
        return {
            **self.status_body(),
            "input": self.input,
            "webhook": self.webhook,
            "policy": self.policy,
            "sync": self.sync,
            "lowPriority": self.low_priority,
            "executionTimeoutMs": int(self.execution_timeout * 1000),
            "ttlMs": int(self.ttl * 1000),
            "retentionMs": int(self.retention * 1000),
            "idempotencyKey": self.idempotency_key,
            "attempts": self.attempts,
            "chunks": len(self.chunks),
            "unread": len(self.chunks) - self.cursor,
            "stopped": self.stopped,
            "webhookAttempts": list(self.webhook_attempts),
        }
