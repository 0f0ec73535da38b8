#!/usr/bin/env bash
# Make the checkout runnable from nothing: .venv with the project and its dev tools installed,
# and a redis-server binary (Debian's package when missing and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing redis-bus, its load-test, bench and dev tools into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,loadtest,bench]'
    touch "$stamp"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: redis-server missing; installing Debian's package"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "bootstrap: redis-server is not installed. Install it, then run this again:" >&2
        echo "  Debian/Ubuntu: sudo apt-get install redis-server    macOS: brew install redis" >&2
        echo "  (or point BUS_REDIS_URL at an existing Redis for 'make run')" >&2
        exit 1
    fi
fi
# redis-cli comes with redis-server in Debian's packages (redis-tools) and Homebrew's, but not
# with every hand-built install. Only the tests need it (they produce without Python), so its
# absence does not stop `make run`.
if ! command -v redis-cli >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: redis-cli missing; installing Debian's redis-tools"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools >/dev/null
    else
        echo "bootstrap: redis-cli is not installed, so tests/test_wire.py is skipped (fails on CI)" >&2
        echo "  Debian/Ubuntu: sudo apt-get install redis-tools    macOS: brew install redis" >&2
    fi
fi
# wrk drives the HTTP section of the bench (python -m loadtest.bench --only http); nothing
# else needs it, so its absence only skips that section.
if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: wrk missing; installing Debian's package"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else
        echo "bootstrap: wrk is not installed, so the bench's http section cannot run" >&2
        echo "  Debian/Ubuntu: sudo apt-get install wrk    macOS: brew install wrk" >&2
    fi
fi
# chromium and its driver: only the dashboard's browser test needs them (Debian's packages; a
# browser that a tool downloads by itself would not run here).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: chromium or chromedriver missing; installing Debian's chromium, chromium-driver"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "bootstrap: chromium/chromedriver are not installed, so tests/test_dashboard.py fails" >&2
        echo "  Debian/Ubuntu: sudo apt-get install chromium chromium-driver" >&2
    fi
fi
echo "bootstrap: ready ($(redis-server --version | cut -d' ' -f1-3))"
