"""Celery settings for ``bridge.app:app`` (``celery -A bridge.app worker``, no other flags).

All values come from the environment (``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND``,
``RUNPOD_API_KEY``, ``RUNPOD_ENDPOINT_BASE_URL``, ``BRIDGE_*``: docs/settings.md); their
defaults and the reasons for them live in ``bridge/celery_settings.py``. Override any of
them below this import; ``bridge.app`` reads this module when it is importable (the
working directory), else ``bridge.celery_settings``.
"""

from bridge.celery_settings import *  # noqa: F403
