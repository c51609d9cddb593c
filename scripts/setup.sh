#!/usr/bin/env bash
# Create .venv and install the project (editable, with its dev tools) and the example driver packages.
# Idempotent and quick when nothing changed: it re-installs only when a pyproject or an example changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)" >&2
    "$python" -m venv .venv
fi

scripts/browser.sh >/dev/null  # Debian's chromium, for the timeline's browser test

stamp=.venv/.setup-stamp
wanted=$(cat pyproject.toml $(find examples -type f \( -name '*.py' -o -name pyproject.toml \) | sort) | sha256sum)
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    exit 0
fi
echo "setup: installing jumpstarter and the example drivers into .venv" >&2
pip="env PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/python -m pip install --quiet"
$pip -e '.[dev]'
# Driver packages are installed the way a user installs them: plain pip install, next to our jumpstarter.
for example in examples/*/pyproject.toml; do
    $pip "./$(dirname "$example")"
done
echo "$wanted" > "$stamp"
