# A bridge gateway worker: `celery -A bridge.app worker` (threads pool, settings from env:
# CELERY_BROKER_URL, CELERY_RESULT_BACKEND, RUNPOD_API_KEY, BRIDGE_*; see celeryconfig.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY bridge ./bridge
COPY plugins ./plugins
# the local endpoint service in compose.yaml serves examples/handlers.py
COPY examples ./examples
RUN pip install . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin bridge

# Never run the worker as root.
USER bridge
# celeryconfig.py is found in the working directory.
ENTRYPOINT ["celery", "-A", "bridge.app", "worker"]
CMD ["--loglevel", "INFO"]
