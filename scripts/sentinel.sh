#!/usr/bin/env bash
# One sentinel of `make run-sentinel`, on port $1, watching the primary on $RUN_REDIS_PORT as
# "bus" (quorum 2 of 3). Its configuration is written afresh on each start (the sentinels
# rewrite it as they learn), in $RUN_DIR/sentinel-$1/.
set -euo pipefail
port=$1
primary=${RUN_REDIS_PORT:-6399}
dir=${RUN_DIR:-$PWD/.run}/sentinel-$port
mkdir -p "$dir"
cat > "$dir/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
sentinel monitor bus 127.0.0.1 $primary 2
sentinel down-after-milliseconds bus 2000
sentinel failover-timeout bus 10000
sentinel parallel-syncs bus 1
CONF
exec redis-server "$dir/sentinel.conf" --sentinel
