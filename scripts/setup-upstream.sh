#!/usr/bin/env bash
# Create the upstream Jumpstarter peer for the interoperability tests: a virtualenv of its own (upstream
# owns the module name `jumpstarter` too) holding tests/upstream/requirements.txt and the example driver
# packages, installed with a plain pip install as on any exporter host or client.
# Idempotent and quick when nothing changed; safe to run from several processes at once.
# The virtualenv is .venv-upstream, or $JUMPSTARTER_UPSTREAM_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${JUMPSTARTER_UPSTREAM_VENV:-.venv-upstream}
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

stamp=$venv/.setup-stamp
wanted=$(cat tests/upstream/requirements.txt tests/upstream/constraints.txt \
    $(find examples -type f \( -name '*.py' -o -name pyproject.toml \) | sort) | sha256sum)
if [ -x "$venv/bin/jmp" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    exit 0
fi
echo "setup-upstream: installing upstream Jumpstarter 0.9.0 into $venv (the first run only: about a minute)" >&2
rm -f "$stamp"
if ! "$venv/bin/python" -c '' 2>/dev/null; then  # missing, or made by a python that is gone
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
pip="env PIP_DISABLE_PIP_VERSION_CHECK=1 $venv/bin/python -m pip install --quiet"
$pip -r tests/upstream/requirements.txt
echo "setup-upstream: upstream installed ($SECONDS s); now the example driver packages" >&2
for example in examples/*/pyproject.toml; do
    $pip --force-reinstall --no-deps "./$(dirname "$example")"
done
"$venv/bin/python" -c 'import jumpstarter_driver_composite, jumpstarter_cli' # fail here, not in a test
echo "$wanted" > "$stamp"
echo "setup-upstream: ready in $SECONDS s" >&2
