"""What a per-job hook is told: :class:`JobContext` (the ``ctx`` argument), and what a
``bridge_register_endpoints`` hook contributes: :class:`EndpointSpec`. Import them from
``bridge.hooks``, which re-exports both.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["EndpointSpec", "JobContext", "Process"]

Process = Literal["producer", "worker", "endpoint"]


@dataclass(slots=True)
class JobContext:
    """Everything a per-job hook may want to know, in one object (fields may be added).

    ``options`` maps plugin name → that plugin's options (``Hooks`` fills it when empty).
    ``meta`` is what plugins want shown (e.g. ``{"cache": "hit"}``): the gateway redacts it
    and stores it with the task's journal entry, read by ``bridge.tasks.job_meta(task_id)``.
    ``state`` is private per-job scratch, never persisted.
    """

    endpoint_id: str
    base_url: str | None = None
    job_id: str | None = None
    task_id: str | None = None
    attempt: int = 0
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    process: Process = "worker"
    state: dict[str, Any] = field(default_factory=dict)
    #: ``time.monotonic()`` when the context was made (the job's start, in this process).
    started: float = field(default_factory=time.monotonic)

    def options_for(self, plugin: str) -> Mapping[str, Any]:
        """The options of one plugin (empty when it has none)."""
        return self.options.get(plugin, {})


@dataclass(frozen=True)
class EndpointSpec:
    """A named endpoint contributed by a plugin's ``bridge_register_endpoints``."""

    name: str
    endpoint_id: str
    base_url: str | None = None
    api_key_env: str | None = None  # the name of an environment variable, never a key
    policy: Mapping[str, Any] | None = None
    plugin: str = ""
