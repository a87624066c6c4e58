"""What the sync and asyncio clients share (no I/O here): an endpoint's settings, policies
and plugins, on top of the lifecycle's view of an endpoint and a job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.lifecycle.endpoint import EndpointState, JobState
from bridge.lifecycle.settings import PollPolicy, RetryPolicy, WaitSettings
from bridge.wire import Wire


class EndpointBase(EndpointState):
    """What both endpoint flavours hold: the wire, the wait settings, the plugins.

    ``plugins=True`` runs the installed plugins' hooks (input and output transforms, vetoes,
    lookups, events) as ``bridge batch``, ``bridge run`` and the Celery tasks do; off by
    default, so that installing a package never changes what a drop-in SDK replacement
    sends."""

    def __init__(
        self,
        endpoint_id: str,
        api_key: str | None,
        base_url: str | None,
        retry: RetryPolicy | None,
        poll: PollPolicy | None,
        plugins: bool = False,
    ) -> None:
        super().__init__(Wire(endpoint_id, api_key, base_url), WaitSettings.from_env().replace(poll=poll, retry=retry))
        from bridge.hooks import Hooks

        self.plugins = plugins
        self.hooks = Hooks.from_settings() if plugins else Hooks.empty()
        self.plain = not plugins

    @property
    def retry_policy(self) -> RetryPolicy:
        return self.waits.retry

    @property
    def poll_policy(self) -> PollPolicy:
        return self.waits.poll

    def _context(self, job_id: str | None = None) -> Any:
        return self.hooks.context(self.endpoint_id, base_url=self.base_url, job_id=job_id)

    def _new_job(self, job_id: str, body: Mapping[str, Any] | None = None) -> JobBase:
        """A job object of this endpoint's flavour."""
        raise NotImplementedError


class JobBase(JobState):
    """A client's job: the lifecycle's job state plus the hook context it was submitted with."""

    def __init__(self, endpoint: EndpointBase, job_id: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(endpoint, job_id, body)
        self._ctx: Any = None

    def _context(self) -> Any:
        if self._ctx is None:
            endpoint = self._endpoint_base
            assert isinstance(endpoint, EndpointBase)
            self._ctx = endpoint._context(self.job_id)
        return self._ctx
