"""An app whose workers import bridge's tasks without ``bridge.install(app)``: job tasks run
the blocking path there (each waits in its pool slot), and must still work."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("plain", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                imports=("bridge.tasks",))
