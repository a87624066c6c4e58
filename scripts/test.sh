#!/usr/bin/env bash
# README's test command: set everything up on a fresh machine and run the whole suite,
# ruff and mypy included. Tests start their own redis-server and local endpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server from the distribution's packages" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
  # Debian starts a system instance; the tests start their own on free ports.
  ($SUDO service redis-server stop || true) >/dev/null 2>&1
fi
scripts/setup.sh "test,dev"
echo "== ruff"; .venv/bin/ruff check bridge plugins tests bench examples
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest -q -p no:cacheprovider "$@"
