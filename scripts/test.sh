#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Two workers (the machines this runs on have 2 cores); tests/test_upstream_drivers.py's tests stay together
# on one of them (its xdist_group). `scripts/test.sh -n 0` runs serially.
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
