"""An existing Celery app as a user has one, for ``bench.celery`` (a): Celery's defaults
(prefork pool, prefetch multiplier 4, early acks), its own tasks, and bridge added with its
one line. Broker and backend come from ``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import bridge

app = Celery("existing", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
bridge.install(app)


@app.task(name="bench.noop")
def noop(value: Any = None) -> Any:
    return value


@app.task(name="existing.add")
def add(x: int, y: int) -> int:
    return x + y
