#!/usr/bin/env bash
# Create .venv and install bridge with the given extras (idempotent, quiet).
# Usage: scripts/setup.sh EXTRAS   e.g. "test,dev" or "embedded"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$(echo "$extras" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  # setuptools announces (as a warning, a screenful under recent pip) that the editable
  # install maps packages with an import hook, which plugins/ -> bridge_plugins needs
  PYTHONWARNINGS="ignore:Editable installation" \
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
  touch "$stamp"
fi
