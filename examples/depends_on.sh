#!/usr/bin/env bash
# `make example-depends-on`: examples/depends_on.py (the RQ tutorial's depends_on pair) in one
# process: it pushes two jobs, runs their worker until the second is handled, prints both and
# exits. Which Redis: BUS_REDIS_URL when set; otherwise the Redis of `make run`, as its
# bus-worker user (a worker may push too), from RUN_DIR/passwords.env (RUN_DIR default .run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BUS_REDIS_URL:-}" ]; then
    if [ ! -f "${RUN_DIR:=.run}/passwords.env" ]; then
        echo "example: no Redis to use: start 'make run' in another terminal first," >&2
        echo "         or set BUS_REDIS_URL" >&2
        exit 2
    fi
    BUS_REDIS_URL=$(scripts/acl.sh url worker "$RUN_DIR")
    export BUS_REDIS_URL
fi
BUS_QUEUES=depends-on exec .venv/bin/python -m examples.depends_on
