#!/usr/bin/env bash
# Set up (if needed), serve the example exporter from YAML and call it from a client.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
