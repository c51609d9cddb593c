#!/usr/bin/env bash
# Create the two virtualenvs in which tests/upstream_drivers/run.py runs upstream Jumpstarter's driver
# packages' own tests (tests/upstream_drivers/requirements.txt, third-party versions pinned by
# constraints.txt beside it):
#   .venv-drivers           this checkout installed the way a user installs it, `pip install -e '.[upstream]'`,
#                           then the driver packages (their `jumpstarter==0.9.0` is met by our 0.9.0+hil.1)
#   .venv-drivers-upstream  upstream's jumpstarter==0.9.0 from PyPI, then the same driver packages
# Usage: scripts/setup-upstream-drivers.sh [ours|upstream|both]   (default: both)
# Idempotent and quick when nothing changed; safe to run from several processes at once (each venv has
# a lock, VENV.lock, which tests/upstream_drivers/run.py also holds while it runs tests in the venv).
# The virtualenvs are $JUMPSTARTER_DRIVERS_VENV and $JUMPSTARTER_DRIVERS_UPSTREAM_VENV if set.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)

python=${PYTHON:-python3}
ours=${JUMPSTARTER_DRIVERS_VENV:-.venv-drivers}
upstream=${JUMPSTARTER_DRIVERS_UPSTREAM_VENV:-.venv-drivers-upstream}
requirements=tests/upstream_drivers/requirements.txt
constraints=tests/upstream_drivers/constraints.txt
which=${1:-both}
case "$which" in ours|upstream|both) ;; *) echo "usage: $0 [ours|upstream|both]" >&2; exit 2 ;; esac

# Where `import jumpstarter` finds it, without running it (our side's code may be mid-change); run with
# -I, so that the current directory (this checkout) is not on sys.path.
where_is_jumpstarter='import importlib.util, os; print(os.path.realpath(importlib.util.find_spec("jumpstarter").origin))'

fail() {
    echo "setup-upstream-drivers: $*" >&2
    exit 1
}

# lock VENV: hold VENV.lock until the (sub)shell ends, unless the caller holds it already (run.py does, for
# the whole of its run, and says so with JUMPSTARTER_DRIVERS_LOCKED=1).
lock() {
    if [ -z "${JUMPSTARTER_DRIVERS_LOCKED:-}" ]; then
        exec 9>"$1.lock"
        flock 9
    fi
}

# new_venv VENV: create VENV afresh, so that it holds what the requirements say and nothing left from
# before (a dropped requirement, an older pin).
new_venv() {
    rm -rf "$1"
    "$python" -m venv "$1" || fail "can't create $1 with $python"
}

pip_install() {  # pip_install VENV ARGS...: quiet, but a failure shows pip's own words
    local venv=$1
    shift
    env PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet "$@" \
        || fail "pip install $* into $venv failed (see pip's output above)"
}

setup_ours() (
    mkdir -p "$(dirname "$ours")"
    lock "$ours"
    stamp=$ours/.setup-stamp
    # The checkout is installed editable: only its packaging (pyproject.toml) needs a re-install.
    wanted=$(cat pyproject.toml "$requirements" "$constraints" | sha256sum)
    if "$ours/bin/python" -c "" 2>/dev/null && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
        exit 0
    fi
    echo "setup-upstream-drivers: installing this checkout and the upstream driver packages into $ours" >&2
    new_venv "$ours"
    # As a user would: our jumpstarter first, then the drivers; the same third-party pins as upstream's side.
    pip_install "$ours" -c "$constraints" -e '.[upstream]'
    pip_install "$ours" -r "$requirements"
    # The drivers require jumpstarter==0.9.0: pip must have kept ours (0.9.0+hil.1), not fetched upstream's.
    found=$("$ours/bin/python" -I -c "$where_is_jumpstarter" 2>&1) \
        || fail "can't find jumpstarter in $ours: $found"
    case "$found" in
        "$root"/jumpstarter/*) ;;
        *) fail "jumpstarter in $ours is not this checkout's: it is $found (pip replaced ours; \
pip show: $("$ours/bin/python" -m pip show jumpstarter 2>/dev/null | grep -E '^(Version|Location)' | tr '\n' ' '))" ;;
    esac
    if "$ours/bin/python" -m pip show --quiet jumpstarter-protocol >/dev/null 2>&1; then
        fail "upstream's jumpstarter-protocol got into $ours: some requirement pulled upstream's jumpstarter"
    fi
    echo "$wanted" > "$stamp"
)

setup_upstream() (
    mkdir -p "$(dirname "$upstream")"
    lock "$upstream"
    stamp=$upstream/.setup-stamp
    wanted=$(cat "$requirements" "$constraints" | sha256sum)
    if "$upstream/bin/python" -c "" 2>/dev/null && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
        exit 0
    fi
    echo "setup-upstream-drivers: installing upstream jumpstarter==0.9.0 and its driver packages into $upstream" >&2
    new_venv "$upstream"  # and so without run.py's kept results of upstream's side (results/): the pins changed
    pip_install "$upstream" -c "$constraints" jumpstarter==0.9.0
    pip_install "$upstream" -r "$requirements"
    version=$("$upstream/bin/python" -I -c 'from importlib.metadata import version; print(version("jumpstarter"))' 2>&1) \
        || fail "can't read jumpstarter's version in $upstream: $version"
    [ "$version" = 0.9.0 ] || fail "jumpstarter in $upstream is $version, not upstream's 0.9.0"
    found=$("$upstream/bin/python" -I -c "$where_is_jumpstarter" 2>&1) \
        || fail "can't find jumpstarter in $upstream: $found"
    case "$found" in
        "$root"/jumpstarter/*) fail "jumpstarter in $upstream is this checkout's ($found), not upstream's" ;;
    esac
    echo "$wanted" > "$stamp"
)

case "$which" in
    ours) setup_ours ;;
    upstream) setup_upstream ;;
    both) setup_upstream && setup_ours ;;
esac
