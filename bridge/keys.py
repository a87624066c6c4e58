"""Every Redis key bridge writes, named in one place.

``prefix`` defaults to ``bridge`` (setting ``BRIDGE_KEY_PREFIX``) so that several
deployments can share one Redis.
"""

from __future__ import annotations

import os


def prefix() -> str:
    return os.environ.get("BRIDGE_KEY_PREFIX", "bridge")


def journal(task_id: str) -> str:
    """Hash: the remote job a Celery task submitted (job_id, endpoint_id, base_url, state, ...)."""
    return f"{prefix()}:job:{task_id}"


def cancel(task_id: str) -> str:
    """String: set when the task must cancel its remote job (revoke mirrored, cancel_task)."""
    return f"{prefix()}:cancel:{task_id}"


def stream(task_id: str) -> str:
    """Stream: a task's chunks (field ``chunk``: JSON) and a last entry with ``eof``."""
    return f"{prefix()}:stream:{task_id}"


def budget(endpoint_id: str, route: str) -> str:
    """Rate-budget window for one endpoint and route, shared by every gateway worker."""
    return f"{prefix()}:budget:{endpoint_id}:{route}"


def batch(batch_id: str, part: str) -> str:
    """Per-batch structures: ``results`` (hash index → JSON), ``done`` (counter), ``meta``."""
    return f"{prefix()}:batch:{batch_id}:{part}"


def handoff(host: str, pid: int) -> str:
    """String: set by a worker's main process (``pid`` on ``host``) on warm shutdown; its
    prefork children's gateways read it and hand their tasks back."""
    return f"{prefix()}:handoff:{host}:{pid}"


def webhook_secret(job_ref: str) -> str:
    """The per-job webhook secret and waiting task for webhook completion."""
    return f"{prefix()}:webhook:{job_ref}"
