"""A plugin for the re-run tests, loaded by a ``bridge batch`` subprocess through
``BRIDGE_PLUGINS=tests.batch.veto_plugin``: it vetoes every input whose ``x`` ends in 3, so
those inputs end with a bridge-side error (``JobRejected``), never reaching the endpoint."""

from __future__ import annotations

from typing import Any

from bridge import hookimpl
from bridge.errors import JobRejected


@hookimpl
def bridge_transform_input(ctx: Any, input: Any) -> Any:
    if isinstance(input, dict) and input.get("x", 0) % 10 == 3:
        raise JobRejected(f"veto_plugin refuses input {input['x']}", None, ctx.endpoint_id, "the test plugin")
    return input
