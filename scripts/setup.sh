#!/usr/bin/env bash
# Create .venv (if missing) and install mtlschat. Idempotent; called by the other scripts.
#   scripts/setup.sh            mtlschat + the dev and bench tools (the test command, land.sh)
#   scripts/setup.sh --runtime  mtlschat alone: what running needs (the quickstart)
# Needs only python3 (>= 3.11) with venv/pip.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$py" -m venv "$root/.venv"
fi
full="$root/.venv/.mtlschat-installed"          # with the dev and bench extras
runtime="$root/.venv/.mtlschat-installed-runtime"
fresh() { [ -f "$1" ] && [ ! "$root/pyproject.toml" -nt "$1" ]; }
if [ "${1:-}" = "--runtime" ]; then
  if ! fresh "$full" && ! fresh "$runtime"; then
    "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
    "$root/.venv/bin/python" -m pip install --quiet -e "$root"
    touch "$runtime"
  fi
elif ! fresh "$full"; then
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
  "$root/.venv/bin/python" -m pip install --quiet -e "$root[dev,bench]"
  touch "$full"
fi
