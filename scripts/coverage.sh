#!/usr/bin/env bash
# Line coverage of the whole test suite, child processes included (the server, client, CLI and
# bench processes the tests spawn), then a per-package summary. Extra arguments go to pytest.
# Settings are in pyproject's [tool.coverage]: `patch = subprocess` starts coverage in every
# Python child, `parallel` gives each process its own data file, `combine` merges them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
data="$root/.coverage-data"
rm -rf "$data" && mkdir -p "$data"
export COVERAGE_FILE="$data/.coverage"
# Deselected: it lowers the server's descriptor limit to 3, so that process cannot write its
# coverage data at exit and logs a traceback that the test (rightly) rejects.
deselect=tests/net/test_signals.py::test_stop_while_accepts_are_paused_still_says_bye
status=0
.venv/bin/python -m coverage run -m pytest -q -p no:cacheprovider --deselect "$deselect" "$@" \
  || status=$?
.venv/bin/python -m coverage combine -q
.venv/bin/python -m coverage report --skip-covered --sort=cover >"$data/report.txt" || true
.venv/bin/python -m coverage json -q -o "$data/coverage.json"
.venv/bin/python scripts/coverage_by_package.py "$data/coverage.json"
echo "(per file: $data/report.txt; pytest exit status $status)"
exit "$status"
