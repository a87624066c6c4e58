"""The bundled Celery app: ``celery -A bridge.app worker`` runs a bridge gateway worker.

Configured by the top-level ``celeryconfig.py`` (settings from the environment). Producers
may use it too: ``from bridge.app import app; app.send_task("bridge.run", ...)``.
"""

from __future__ import annotations

from celery import Celery

from bridge.worker import install

app = Celery("bridge")
app.config_from_object("celeryconfig")
install(app)
