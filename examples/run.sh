#!/usr/bin/env bash
# `make example`: the example app (127.0.0.1:8001, EXAMPLE_BIND overrides) and a worker for
# the queue "renders", in the foreground under honcho; Ctrl-C stops both. With EXAMPLE_PROCFILE
# another example's processes (`make example-report`: examples/Procfile.report).
#
# Which Redis: BUS_REDIS_URL when set (both processes use it); otherwise the Redis of
# `make run`, each process as its own ACL user (the app as bus-web, the worker as bus-worker),
# from RUN_DIR/passwords.env (RUN_DIR default .run, RUN_REDIS_PORT default 6399).
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHONUNBUFFERED=1
if [ -n "${BUS_REDIS_URL:-}" ]; then
    EXAMPLE_APP_URL=$BUS_REDIS_URL
    EXAMPLE_WORKER_URL=$BUS_REDIS_URL
    echo "example: using the Redis at BUS_REDIS_URL"
elif [ -f "${RUN_DIR:=.run}/passwords.env" ]; then
    EXAMPLE_APP_URL=$(scripts/acl.sh url web "$RUN_DIR")
    EXAMPLE_WORKER_URL=$(scripts/acl.sh url worker "$RUN_DIR")
    echo "example: using make run's Redis on 127.0.0.1:${RUN_REDIS_PORT:-6399} (users bus-web, bus-worker)"
else
    echo "example: no Redis to use: start 'make run' in another terminal first," >&2
    echo "         or set BUS_REDIS_URL" >&2
    exit 2
fi
export EXAMPLE_APP_URL EXAMPLE_WORKER_URL
if [ -z "${EXAMPLE_PROCFILE:-}" ]; then
    echo "example: the app at http://${EXAMPLE_BIND:-127.0.0.1:8001}/ (Ctrl-C stops it and its worker)"
fi
exec .venv/bin/honcho -f "${EXAMPLE_PROCFILE:-examples/Procfile}" start "$@"
