#!/usr/bin/env bash
# Lint and type-check the tree: ruff's checks and formatting (pyproject's [tool.ruff]) and mypy ([tool.mypy]).
# Both run even when the first fails, so that one run shows every finding; the exit code is non-zero if either
# found something. Arguments, if any, are what mypy checks instead of the whole tree (e.g. one file).
set -uo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(jumpstarter pytest_jumpstarter bench examples tests)
fi
status=0
.venv/bin/ruff check . || status=1
.venv/bin/ruff format --check . || status=1
.venv/bin/mypy "${targets[@]}" || status=1
exit $status
