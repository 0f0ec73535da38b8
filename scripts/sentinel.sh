#!/usr/bin/env bash
# One sentinel of `make run-sentinel`, on port $1, watching the primary on $RUN_REDIS_PORT as
# "bus" (quorum 2 of 3), logged in to the servers and to the other sentinels as bus-sentinel
# ($RUN_DIR/sentinel-auth.conf, from scripts/acl-servers.sh). Its own users are in
# $RUN_DIR/sentinel-users.acl (deploy/redis/sentinel-users.acl): each role may ask where the
# primary is, only bus-admin may order a failover, nobody asks without logging in:
#   set -a; . .run/env/admin.env; set +a; redis-cli -p 26399 --user bus-admin sentinel failover bus
# Its configuration is written afresh on each start (the sentinels rewrite it as they learn),
# mode 600 (it holds bus-sentinel's password), in $RUN_DIR/sentinel-$1/.
set -euo pipefail
port=$1
primary=${RUN_REDIS_PORT:-6399}
run_dir=${RUN_DIR:-$PWD/.run}
dir=$run_dir/sentinel-$port
umask 077
mkdir -p "$dir"
{
    cat <<CONF
port $port
bind 127.0.0.1
dir $dir
aclfile $run_dir/sentinel-users.acl
sentinel monitor bus 127.0.0.1 $primary 2
sentinel down-after-milliseconds bus 2000
sentinel failover-timeout bus 10000
sentinel parallel-syncs bus 1
CONF
    cat "$run_dir/sentinel-auth.conf"
} >"$dir/sentinel.conf"
exec redis-server "$dir/sentinel.conf" --sentinel
