#!/usr/bin/env bash
# The README's test command: lint, type-check and run the whole test suite. Extra arguments go to
# pytest (e.g. scripts/test.sh -k ca -x).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
# pytest exits 5 when no test ran: that is a failure here too, so its code is passed on unchanged.
exec .venv/bin/python -m pytest "$@"
