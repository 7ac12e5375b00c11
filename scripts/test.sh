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
# Tests run in 3 processes (pytest-xdist): most of them wait on real servers and clients, so 3
# keep 2 cores busy. MTLSCHAT_TEST_JOBS=0 runs them in this process (for -x, pdb, profiling).
# pytest exits 5 when no test ran: that is a failure here too, so its code is passed on unchanged.
exec .venv/bin/python -m pytest -n "${MTLSCHAT_TEST_JOBS:-3}" "$@"
