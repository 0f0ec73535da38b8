#!/usr/bin/env bash
# `make run`: the whole stack in the foreground under honcho. Ctrl-C stops every process.
# Without BUS_REDIS_URL it starts its own redis-server (AOF on, data in RUN_DIR, default .run/,
# relative to the checkout) with an ACL user per role (scripts/acl.sh: RUN_DIR/users.acl, the
# passwords in RUN_DIR/passwords.env), each process logged in as its own, and writes each role's
# BUS_REDIS_URL into RUN_DIR/env/<role>.env (mode 600) for the commands the README and docs/ show; with it, none.
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHONUNBUFFERED=1
if [ -z "${BUS_REDIS_URL:-}" ]; then
    export RUN_REDIS_PORT=${RUN_REDIS_PORT:-6399}
    mkdir -p "${RUN_DIR:=.run}"
    RUN_DIR=$(cd "$RUN_DIR" && pwd)
    export RUN_DIR
    scripts/acl.sh generate "$RUN_DIR"
    scripts/acl.sh env "$RUN_DIR"
    procfile=Procfile
    echo "run: starting redis-server on 127.0.0.1:${RUN_REDIS_PORT} (AOF in ${RUN_DIR}/)"
    echo "run: ACL users in ${RUN_DIR}/users.acl; each role's BUS_REDIS_URL in ${RUN_DIR}/env/<role>.env"
    echo "run: make status, make redis-cli; or load a role: set -a; . ${RUN_DIR}/env/tools.env; set +a"
else
    procfile=Procfile.external
    echo "run: using the Redis at BUS_REDIS_URL; starting none"
fi
echo "run: dashboard at http://${BUS_WEB_BIND:-127.0.0.1:8000}/  (Ctrl-C stops everything)"
exec .venv/bin/honcho -f "$procfile" start "$@"
