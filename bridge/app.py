"""The bundled Celery app: ``celery -A bridge.app worker`` runs a bridge worker.

Configured by the top-level ``celeryconfig.py`` when it is importable (run from the
repository or the Docker image), else by the same defaults in
:mod:`bridge.celery_settings`, so a pip-installed bridge works from any directory.
Producers may use it too: ``from bridge.app import app; app.send_task("bridge.run", ...)``.
"""

from __future__ import annotations

import importlib.util

from celery import Celery

from bridge.worker import install

app = Celery("bridge")
app.config_from_object(
    "celeryconfig" if importlib.util.find_spec("celeryconfig") else "bridge.celery_settings"
)
install(app)
