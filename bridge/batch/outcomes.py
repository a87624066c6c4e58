"""How a failed input is described in the journal, OUTPUT and the failures file: a JSON-safe
``{"type", "message", "error"}`` dict, whose ``type`` later tells a re-run what to do with
the input (:attr:`bridge.batch.store.Item.outcome`)."""

from __future__ import annotations

import json
from typing import Any

from bridge import errors


def error_dict(exc: BaseException) -> dict[str, Any]:
    """A JSON-safe description of why an input failed (what goes to the failures file)."""
    body: dict[str, Any] = {"type": type(exc).__name__, "message": errors.scrub(str(exc))}
    remote = getattr(exc, "error", None)
    if remote is not None:
        body["error"] = remote if isinstance(remote, (dict, list)) else errors.scrub(str(remote))
    return body


def status_error(status: str, body: dict[str, Any]) -> dict[str, Any]:
    remote = body.get("error")
    if isinstance(remote, str) and remote.startswith("{"):
        try:
            remote = json.loads(remote)  # RunPod's worker sends a JSON-encoded error object
        except ValueError:
            pass
    return {
        "type": {"FAILED": "JobFailed", "CANCELLED": "JobCancelled", "TIMED_OUT": "JobTimedOut"}.get(
            status, "JobError"
        ),
        "message": f"the remote job ended {status}",
        "error": remote if isinstance(remote, (dict, list)) or remote is None else errors.scrub(str(remote)),
    }


__all__ = ["error_dict", "status_error"]
