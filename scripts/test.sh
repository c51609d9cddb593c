#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/lint.sh  # ruff and mypy on the whole tree, a few seconds: a finding fails the run before the tests
# Two workers (the machines this runs on have 2 cores), a test file to a worker, the file with the most
# tests first: tests/test_upstream_drivers.py's, which all wait on one run of the upstream-driver harness,
# go to one worker at once while the other runs the rest of the suite. `scripts/test.sh -n 0`: serially.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
