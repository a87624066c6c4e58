"""Default Celery settings of ``bridge.app:app`` (``celery -A bridge.app worker``, no other
flags). The top-level ``celeryconfig.py`` imports them, and is where a deployment changes
them; an installed bridge run outside the repository falls back to this module.

Everything comes from the environment: ``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND``,
``RUNPOD_API_KEY`` / ``RUNPOD_ENDPOINT_BASE_URL`` (read by the gateway in the worker) and
``BRIDGE_*`` (docs/settings.md). The numbers below are explained in docs/celery.md and
docs/scaling.md.
"""

from __future__ import annotations

import math
import os

from bridge.redis_clients import outage_seconds as _outage_seconds

_redis = "redis://127.0.0.1:6379/0"

broker_url = os.environ.get("CELERY_BROKER_URL", _redis)
result_backend = os.environ.get("CELERY_RESULT_BACKEND", broker_url)
imports = ("bridge.tasks", "bridge.batch.celery")

# Job tasks take no pool slot (they are held in the main process: BRIDGE_MAX_HELD_JOBS,
# default 10,000 per process), so the pool only runs the short tasks (bridge.status, cancel,
# purge_queue, health). Threads: one process (~110 MB with 10,000 jobs held, against ~220 MB
# for prefork -c 2) at the same throughput (docs/scaling.md).
worker_pool = os.environ.get("BRIDGE_WORKER_POOL", "threads")
worker_concurrency = int(os.environ.get("BRIDGE_WORKER_CONCURRENCY", "8"))
worker_prefetch_multiplier = 1

# Crash safety: a killed worker's messages come back; a redelivered task resumes its job.
task_acks_late = True
task_reject_on_worker_lost = True
# Takeover after a worker dies: visibility timeout after its last heartbeat (the bridge
# worker step refreshes held bridge messages every BRIDGE_HEARTBEAT_INTERVAL s), found by
# the restore sweep every unacked_restore_interval s: at most 60 + 10 + 5 s with these values.
_vt = int(os.environ.get("BRIDGE_VISIBILITY_TIMEOUT", "60"))
broker_transport_options = {
    "visibility_timeout": _vt,
    "unacked_restore_interval": int(os.environ.get("BRIDGE_RESTORE_INTERVAL", "5")),
    "unacked_restore_throttle": 1,
}
result_backend_transport_options = {"visibility_timeout": _vt}
# A Redis restart or failover while a task stores its result is retried, not a failed task
# (whose remote job completed): Celery's backoff with full jitter, at most 10 s apart
# (5 s on average), for about BRIDGE_REDIS_OUTAGE seconds (300 by default) or a little more.
result_backend_always_retry = True
redis_backend_health_check_interval = 30  # a pooled result-store connection gone stale in a restart is replaced
result_backend_max_sleep_between_retries_ms = 10_000
result_backend_max_retries = math.ceil(_outage_seconds() / 5) + 10  # + the first ~10 s of ramp-up

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_extended = False  # never store task arguments next to results
broker_connection_retry_on_startup = True
# RabbitMQ closes a channel whose delivery stays unacked past its consumer_timeout; a held
# job's message may (raise consumer_timeout above your longest job: docs/celery.md). With
# this the worker reconnects instead of exiting, and the requeued message re-attaches.
broker_channel_error_retry = True
worker_hijack_root_logger = False
