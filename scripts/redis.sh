#!/usr/bin/env bash
# The stack's redis-server for `make run` (AOF on, data in $RUN_DIR, default .run/). On SIGTERM
# it waits (up to 3.5 s, inside honcho's 5 s) for the workers and subscribers to leave, so they
# can put back anything unacknowledged and write their last stats before Redis goes away.
# Extra arguments go to redis-server (make run-sentinel's replica: --replicaof 127.0.0.1 PORT).
# With --aclfile DIR/users.acl (scripts/acl.sh), the wait logs in as bus-admin.
set -uo pipefail
port=${RUN_REDIS_PORT:-6399}
dir=${RUN_DIR:-$PWD/.run}
mkdir -p "$dir"
cli=(redis-cli -p "$port")
prev=""
for arg in "$@"; do
    if [ "$prev" = --aclfile ]; then
        REDISCLI_AUTH=$("$(dirname "$0")/acl.sh" password admin "$(dirname "$arg")") || exit 1
        export REDISCLI_AUTH
        cli+=(--user bus-admin)
    fi
    prev=$arg
done
# Its own session: honcho signals our whole process group, and Redis must outlive the consumers.
setsid redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
    --appendonly yes --appendfsync everysec --save "" "$@" &
pid=$!
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
stop() {
    # Bounded by the clock, not a count: on a loaded machine a slow redis-cli must not push the
    # SIGTERM past honcho's SIGKILL (which would leave this redis-server running, unsignalled).
    local until=$(( $(now_ms) + 3500 ))
    while [ "$(now_ms)" -lt "$until" ]; do
        timeout 0.5 "${cli[@]}" client list 2>/dev/null |
            grep -qE 'name=bus:(worker|subscriber)' || break
        sleep 0.1
    done
    # Redis 7.0 refuses a SIGTERM that lands while it writes its initial AOF (a replica just
    # after its full sync: "Writing initial AOF, can't exit") and does not try again: repeat
    # it while the rewrite ends, then ask for a shutdown that ignores such errors.
    for _ in 1 2 3 4 5; do
        kill -TERM "$pid" 2>/dev/null || return
        sleep 0.2
        kill -0 "$pid" 2>/dev/null || return
    done
    timeout 0.5 "${cli[@]}" shutdown force >/dev/null 2>&1
}
trap stop TERM INT
wait "$pid"; wait "$pid"
