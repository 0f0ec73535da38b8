#!/usr/bin/env bash
# `make run-sentinel`: the stack behind Sentinel, in the foreground under honcho: a primary
# (RUN_REDIS_PORT, default 6399) and its replica (the next port), three sentinels
# (RUN_SENTINEL_PORT and the next two, default 26399), gunicorn, a worker and a subscriber, every
# role finding the primary through the sentinels, pushes waiting for the replica (WAIT 1). Try
# a failover as bus-admin (scripts/sentinel.sh) and watch the dashboard. Ctrl-C stops everything.
#
# ACL as in `make run` (scripts/acl.sh: RUN_DIR/users.acl, RUN_DIR/passwords.env): both servers
# load the same file, each process logs in as its role's user, and RUN_DIR/env/<role>.env holds
# its BUS_REDIS_URL and REDISCLI_AUTH plus BUS_SENTINELS, BUS_SENTINEL_MASTER and its login on
# the sentinels (BUS_SENTINEL_USERNAME/PASSWORD), so a shell that loads one follows a failover.
# The replica (and the old primary after a failover) logs in to its primary as bus-replica, the
# sentinels to the servers and to each other as bus-sentinel (scripts/acl-servers.sh); the
# sentinels have users of their own (RUN_DIR/sentinel-users.acl): each role as on the servers,
# allowed only to ask where the primary is.
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHONUNBUFFERED=1
export RUN_REDIS_PORT=${RUN_REDIS_PORT:-6399}
export RUN_REPLICA_PORT=$((RUN_REDIS_PORT + 1))
sentinel=${RUN_SENTINEL_PORT:-26399}
export RUN_SENTINEL_1=$sentinel RUN_SENTINEL_2=$((sentinel + 1)) RUN_SENTINEL_3=$((sentinel + 2))
mkdir -p "${RUN_DIR:=.run}"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
export RUN_DIR
export BUS_SENTINELS="127.0.0.1:${RUN_SENTINEL_1},127.0.0.1:${RUN_SENTINEL_2},127.0.0.1:${RUN_SENTINEL_3}"
export BUS_SENTINEL_MASTER=bus
export BUS_WAIT_REPLICAS=${BUS_WAIT_REPLICAS:-1}
scripts/acl.sh generate "$RUN_DIR"
scripts/acl-servers.sh users "$RUN_DIR"
scripts/acl.sh env "$RUN_DIR"
scripts/acl-servers.sh env "$RUN_DIR" "BUS_SENTINELS=$BUS_SENTINELS" "BUS_SENTINEL_MASTER=$BUS_SENTINEL_MASTER"
scripts/acl-servers.sh sentinel-logins "$RUN_DIR"
echo "run: primary 127.0.0.1:${RUN_REDIS_PORT}, replica :${RUN_REPLICA_PORT}, sentinels :${RUN_SENTINEL_1}-${RUN_SENTINEL_3} (data in ${RUN_DIR}/)"
echo "run: ACL users in ${RUN_DIR}/users.acl and sentinel-users.acl; each role's variables in ${RUN_DIR}/env/<role>.env"
echo "run: dashboard at http://${BUS_WEB_BIND:-127.0.0.1:8000}/  (Ctrl-C stops everything)"
exec .venv/bin/honcho -f Procfile.sentinel start "$@"
