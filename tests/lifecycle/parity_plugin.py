"""The parity test's recording plugin: every hook call, in order, as one JSON line in a file.

Loaded by name (``BRIDGE_PLUGINS=recorder=lifecycle.parity_plugin:ParityRecorder``) with its
options from ``BRIDGE_PLUGINS_CONFIG``, so every driver that applies plugins loads the same
one in whatever process it runs. Besides recording, it plays the scenarios' plugins, keyed
by endpoint id (options ``veto``, ``transform``, ``lookup``): a veto, an input transform and
a cache hit, written as data in the scenario table (parity_table.py).

A record is ``{"endpoint": id, "hook": name, ...what the hook saw}``, written with O_APPEND
so lines from threads and processes never interleave.
"""

from __future__ import annotations

import json
import os
from typing import Any

from bridge import JobRejected, hookimpl


def _name(error: Any) -> str | None:
    return None if error is None else type(error).__name__


class ParityRecorder:
    def __init__(self, options: dict[str, Any]) -> None:
        self.path = str(options["path"])
        self.veto: list[str] = list(options.get("veto") or [])
        self.transform: dict[str, dict[str, Any]] = dict(options.get("transform") or {})
        self.lookup: dict[str, Any] = dict(options.get("lookup") or {})

    def _record(self, ctx: Any, hook: str, **seen: Any) -> None:
        line = json.dumps({"endpoint": ctx.endpoint_id, "hook": hook, **seen}, default=repr) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    # -- transforms: recorded, and the scenarios' veto / transform / cache hit ----------------

    @hookimpl
    def bridge_transform_input(self, ctx: Any, input: Any) -> Any:
        self._record(ctx, "transform_input", input=input)
        if ctx.endpoint_id in self.veto:
            raise JobRejected(f"inputs to {ctx.endpoint_id} are refused today")
        extra = self.transform.get(ctx.endpoint_id)
        return {**input, **extra} if extra else None

    @hookimpl
    def bridge_lookup(self, ctx: Any, input: Any) -> Any:
        self._record(ctx, "lookup", input=input)
        if ctx.endpoint_id in self.lookup:
            ctx.meta["cache"] = "hit"
            return self.lookup[ctx.endpoint_id]
        return None

    @hookimpl
    def bridge_transform_output(self, ctx: Any, output: Any) -> None:
        self._record(ctx, "transform_output", output=output)

    @hookimpl
    def bridge_transform_chunk(self, ctx: Any, chunk: Any) -> None:
        self._record(ctx, "transform_chunk", chunk=chunk)

    # -- observers --------------------------------------------------------------------------

    @hookimpl
    def bridge_on_submitted(self, ctx: Any, input: Any) -> None:
        self._record(ctx, "submitted", input=input, job=ctx.job_id is not None)

    @hookimpl
    def bridge_on_status_changed(self, ctx: Any, status: Any, previous: Any) -> None:
        self._record(ctx, "status_changed", status=status, previous=previous)

    @hookimpl
    def bridge_on_completed(self, ctx: Any, output: Any) -> None:
        self._record(ctx, "completed", output=output)

    @hookimpl
    def bridge_on_failed(self, ctx: Any, error: Any) -> None:
        self._record(ctx, "failed", error=_name(error))

    @hookimpl
    def bridge_on_cancelled(self, ctx: Any) -> None:
        self._record(ctx, "cancelled")

    @hookimpl
    def bridge_on_retried(self, ctx: Any, error: Any) -> None:
        self._record(ctx, "retried", error=_name(error))

    @hookimpl
    def bridge_on_rate_limited(self, ctx: Any, route: Any) -> None:
        self._record(ctx, "rate_limited", route=route)
