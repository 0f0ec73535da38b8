#!/usr/bin/env bash
# `make run-cluster`: the stack on a Redis Cluster, in the foreground under honcho: six nodes on
# 127.0.0.1 (RUN_CLUSTER_PORT, default 7000, and the next five; cluster bus ports
# RUN_CLUSTER_BUS_PORT, default RUN_CLUSTER_PORT + 10000, and the next five), three primaries
# and a replica of each, AOF on, data in $RUN_DIR/cluster/node-<port>, node timeout
# RUN_CLUSTER_NODE_TIMEOUT_MS (default 2000: a primary unreachable this long is marked failed
# and its replica takes over); gunicorn, a worker and a subscriber, every role reaching the
# cluster through BUS_CLUSTER_NODES. The queues of BUS_QUEUES (default default,orders,billing)
# live on the three different shards. Try `redis-cli -p 7003 --user bus-admin cluster failover`
# (on any replica, after loading RUN_DIR/env/admin.env) and watch the dashboard. Ctrl-C stops
# everything.
#
# ACL as in `make run` (scripts/acl.sh: RUN_DIR/users.acl, RUN_DIR/passwords.env): every node
# loads the same file, each process logs in as its role's user, and RUN_DIR/env/<role>.env holds
# its BUS_REDIS_URL and REDISCLI_AUTH plus BUS_CLUSTER_NODES. A replica logs in to its primary
# as bus-replica (scripts/acl-servers.sh; every node has masteruser/masterauth, since any may
# become a replica); this script's redis-cli (creating the cluster, waiting for it) as
# bus-admin. The cluster bus (node to node gossip, failover votes) has no ACL.
#
# The cluster is created on the first run (the Procfile's "cluster" process); a later run on
# the same data directories brings the nodes back from their nodes.conf, roles included.
#
# Internal modes, run by Procfile.cluster:
#   run-cluster.sh --node N   the Nth node (1-6): scripts/redis.sh with cluster mode on
#   run-cluster.sh --create   wait for the nodes, create the cluster if it is new, wait until
#                             it is ok, then stay up (honcho stops everything when one exits)
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=6
WAIT_S=60  # bound on every wait of --create

node_port() { echo $((RUN_CLUSTER_PORT + $1 - 1)); }

cli() {  # PORT ARGS...: redis-cli as bus-admin (REDISCLI_AUTH: set by --create)
    redis-cli -p "$1" --user bus-admin "${@:2}"
}

cluster_info() {  # FIELD PORT: one field of CLUSTER INFO, empty when the node does not answer
    { cli "$2" cluster info 2>/dev/null || true; } | tr -d '\r' | sed -n "s/^$1://p"
}

run_node() {
    local n=$1 port bus
    port=$(node_port "$n")
    bus=$((RUN_CLUSTER_BUS_PORT + n - 1))
    RUN_DIR=$RUN_DIR/cluster/node-$port RUN_REDIS_PORT=$port exec scripts/redis.sh \
        --aclfile "$RUN_DIR/users.acl" --include "$RUN_DIR/replication.conf" \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-port "$bus" \
        --cluster-node-timeout "${RUN_CLUSTER_NODE_TIMEOUT_MS:-2000}" \
        --repl-diskless-sync-delay 0
}

wait_for() {  # WHAT COMMAND...: run COMMAND every 0.2 s until it succeeds, at most WAIT_S
    local what=$1 deadline=$((SECONDS + WAIT_S))
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then
            echo "cluster: gave up after ${WAIT_S} s waiting for $what" >&2
            exit 1
        fi
        sleep 0.2
    done
}

all_answer() {
    local n
    for n in $(seq "$NODES"); do
        [ "$(cli "$(node_port "$n")" ping 2>/dev/null)" = PONG ] || return 1
    done
}

all_ok() {
    local n
    for n in $(seq "$NODES"); do
        [ "$(cluster_info cluster_state "$(node_port "$n")")" = ok ] || return 1
    done
}

create() {
    local n port known fresh=0 addresses=()
    REDISCLI_AUTH=$(scripts/acl.sh password admin "$RUN_DIR")
    export REDISCLI_AUTH
    wait_for "every node to answer PING" all_answer
    for n in $(seq "$NODES"); do
        port=$(node_port "$n")
        addresses+=("127.0.0.1:$port")
        known=$(cluster_info cluster_known_nodes "$port")
        if [ "$known" = 1 ]; then fresh=$((fresh + 1)); fi
    done
    if ((fresh == NODES)); then
        echo "cluster: creating the cluster (3 primaries, a replica each)"
        # Without its colours: under honcho they would spill into the next process's lines.
        redis-cli --user bus-admin --cluster create "${addresses[@]}" --cluster-replicas 1 \
            --cluster-yes | sed 's/\x1b\[[0-9;]*m//g'
    elif ((fresh > 0)); then
        echo "cluster: $fresh of $NODES nodes know no cluster while the others do;" \
            "remove ${RUN_DIR}/cluster to start afresh" >&2
        exit 1
    else
        echo "cluster: the nodes came back from their nodes.conf; not creating it again"
    fi
    wait_for "cluster_state:ok on every node" all_ok
    echo "cluster: ok on every node ($SECONDS s); who is who: redis-cli -p ${RUN_CLUSTER_PORT} --user bus-admin cluster nodes (REDISCLI_AUTH from ${RUN_DIR}/env/admin.env)"
    unset REDISCLI_AUTH
    exec sleep infinity
}

export PYTHONUNBUFFERED=1
export RUN_CLUSTER_PORT=${RUN_CLUSTER_PORT:-7000}
export RUN_CLUSTER_BUS_PORT=${RUN_CLUSTER_BUS_PORT:-$((RUN_CLUSTER_PORT + 10000))}
mkdir -p "${RUN_DIR:=.run}"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
export RUN_DIR

case "${1:-}" in
--node) run_node "$2" ;;
--create) create ;;
esac

first=$RUN_CLUSTER_PORT last=$((RUN_CLUSTER_PORT + NODES - 1))
export BUS_CLUSTER_NODES="127.0.0.1:${first},127.0.0.1:$((first + 1)),127.0.0.1:$((first + 2))"
export BUS_QUEUES=${BUS_QUEUES:-default,orders,billing}
export BUS_WAIT_REPLICAS=${BUS_WAIT_REPLICAS:-1}
export RUN_REDIS_PORT=$first  # the node in each role's BUS_REDIS_URL (scripts/acl.sh url)
scripts/acl.sh generate "$RUN_DIR"
scripts/acl-servers.sh users "$RUN_DIR"
scripts/acl.sh env "$RUN_DIR"
scripts/acl-servers.sh env "$RUN_DIR" "BUS_CLUSTER_NODES=$BUS_CLUSTER_NODES"
echo "run: cluster nodes 127.0.0.1:${first}-${last}, bus ports ${RUN_CLUSTER_BUS_PORT}-$((RUN_CLUSTER_BUS_PORT + NODES - 1)) (data in ${RUN_DIR}/cluster/)"
echo "run: ACL users in ${RUN_DIR}/users.acl; each role's variables in ${RUN_DIR}/env/<role>.env"
echo "run: queues ${BUS_QUEUES}; failover (on a replica): set -a; . ${RUN_DIR}/env/admin.env; set +a; redis-cli -p $((first + 3)) --user bus-admin cluster failover"
echo "run: dashboard at http://${BUS_WEB_BIND:-127.0.0.1:8000}/  (Ctrl-C stops everything)"
exec .venv/bin/honcho -f Procfile.cluster start "$@"
