"""An existing Celery app, as a user has one: its own tasks, Celery's defaults (prefork pool,
prefetch multiplier 4, early acks), and bridge added with its one line. Worker tests run it
as ``celery -A existing_app worker`` with the broker and backend from the environment."""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

import bridge

app = Celery("existing", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                worker_send_task_events=True, broker_connection_retry_on_startup=True)
bridge.install(app)

_counts = redis.Redis.from_url(os.environ["BRIDGE_REDIS_URL"])


@app.task(name="existing.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="existing.total")
def total(outputs: list[dict[str, Any]]) -> int:
    """A chord body: counts its own calls (a chord must call it once)."""
    _counts.incr("existing:total-calls")
    return sum(int(o["n"]) for o in outputs)


@app.task(name="existing.record")
def record(output: dict[str, Any]) -> int:
    """A chain step after a bridge job: counts how often each job's result arrived."""
    return int(_counts.incr(f"existing:record:{output['n']}"))


@app.task(name="existing.prep")
def prep(n: int) -> dict[str, int]:
    return {"n": n}
