"""How a failed input is described in the journal, OUTPUT and the failures file: a JSON-safe
``{"type", "message", "error"}`` dict, whose ``type`` later tells a re-run what to do with
the input (:attr:`bridge.batch.store.Item.outcome`)."""

from __future__ import annotations

import json
from typing import Any

from bridge import errors


def error_dict(exc: BaseException) -> dict[str, Any]:
    """A JSON-safe description of why an input failed (what goes to the failures file); a
    failed job's error text stays structured when the endpoint sent a JSON object (RunPod's
    worker sends ``{"error_type", "error_message", ...}`` encoded as a string)."""
    body: dict[str, Any] = {"type": type(exc).__name__, "message": errors.scrub(str(exc))}
    remote = getattr(exc, "error", None)
    if isinstance(remote, str) and remote.startswith("{"):
        try:
            remote = json.loads(remote)
        except ValueError:
            pass
    if remote is not None:
        body["error"] = remote if isinstance(remote, (dict, list)) else errors.scrub(str(remote))
    return body


__all__ = ["error_dict"]
