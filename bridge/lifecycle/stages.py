"""What a caller adds around the one lifecycle, as small middleware-like units.

A plan asks ``Stage(name, args)``; its driver calls the method of that name on the
caller's :class:`Stages` (awaiting it when it returns an awaitable). Every method has a
do-nothing default, so the clients use :class:`Stages` as it is; the gateway adds its Redis
journal, webhooks and stream writer (:mod:`bridge.gateway.stages`), the batch engine its
store and webhook waiter.

==============  =========================================================================
stage           called
==============  =========================================================================
claim           before submitting: a job id to resume instead (a redelivery), or None;
                may raise :class:`~bridge.lifecycle.steps.Cancelled`
check_input     with the transformed input, before it is sent; raises InvalidRequest
webhook         ``(ctx, relay, excluded)``: the webhook URL to submit with and the
                fallback looks ``(after, every)`` while waiting for it, or ``(relay, None)``
release         a submit failed for good: nothing was created (free the claim)
record          the endpoint accepted the job: record its id (before anything else)
waiting         the wait begins: interruptions (revoke, webhook, hand-off) apply from here
streamed        a stream resumes: the chunks an earlier delivery already emitted
may_cancel      before an automatic /cancel: False when one was already sent for the job
on_event        every event the plan reports (``name, ctx, data``), before the plugins'
                observers see it; may raise to stop the job (a batch's tripwire)
==============  =========================================================================
"""

from __future__ import annotations

from typing import Any


class Stages:
    """The stages of a caller that adds nothing (the clients)."""

    def claim(self, ctx: Any) -> Any:
        return None

    def check_input(self, ctx: Any, payload: Any) -> Any:
        return None

    def webhook(self, ctx: Any, relay: str | None, excluded: bool) -> Any:
        return relay, None

    def release(self, ctx: Any) -> Any:
        return None

    def record(self, ctx: Any, job_id: str) -> Any:
        return None

    def waiting(self, ctx: Any, job_id: str) -> Any:
        return None

    def streamed(self, ctx: Any) -> Any:
        return ()

    def may_cancel(self, job_id: str) -> Any:
        return True

    def on_event(self, name: str, ctx: Any, data: dict[str, Any]) -> Any:
        return None


NO_STAGES = Stages()
