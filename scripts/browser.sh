#!/usr/bin/env bash
# A headless browser for tests/test_timeline.py, which renders the HTML timeline once: Debian's chromium,
# installed when missing if this runs as root with apt (about 18 s: apt-get update, then the install).
# Idempotent; prints the browser's path, or why there is none (the test then skips, saying so). Never fails.
set -uo pipefail
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null; then
        command -v "$name"
        exit 0
    fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "browser: no chromium, and not root with apt-get to install it: the timeline's browser test will skip" >&2
    exit 0
fi
echo "browser: installing Debian's chromium for the timeline's browser test" >&2
export DEBIAN_FRONTEND=noninteractive
install="apt-get install -y -qq --no-install-recommends chromium"
if ! $install >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1
    $install >/dev/null 2>&1 || echo "browser: apt-get install chromium failed: the browser test will skip" >&2
fi
command -v chromium || true
