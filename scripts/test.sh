#!/usr/bin/env bash
# README's test command: set everything up on a fresh machine and run the whole suite,
# ruff and mypy included. Tests start their own redis-server, rabbitmq-server and local endpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests start their own redis-server and rabbitmq-server (tests/rabbitmq: RabbitMQ as the
# Celery broker) on free loopback ports; install the distribution's packages when missing.
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 \
  || missing="$missing rabbitmq-server"
if [ -n "$missing" ]; then
  echo "installing$missing from the distribution's packages" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  # Debian starts system instances; stop them (the tests use private ones).
  for service in $missing; do ($SUDO service "$service" stop || true) >/dev/null 2>&1; done
fi
scripts/setup.sh "test,dev"
echo "== ruff"; .venv/bin/ruff check bridge plugins tests bench examples
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest -q -p no:cacheprovider "$@"
