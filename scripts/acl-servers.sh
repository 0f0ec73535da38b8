#!/usr/bin/env bash
# The ACL users the servers of `make run-sentinel` and `make run-cluster` need among
# themselves: bus-replica (a replica's link to its primary) and bus-sentinel (a sentinel on the
# servers it watches), from deploy/redis/users.acl, where they are off.
#
#   scripts/acl-servers.sh users DIR   after `scripts/acl.sh generate DIR`: turns both users
#       of DIR/users.acl on with a password made up now (the file gets its SHA-256 only), and
#       writes, mode 600: DIR/replication.conf (masteruser/masterauth: each server loads it
#       with redis-server --include) and DIR/sentinel-auth.conf (sentinel auth-user/auth-pass
#       of the master "bus", for scripts/sentinel.sh).
#   scripts/acl-servers.sh env DIR NAME=VALUE...   after `scripts/acl.sh env DIR`: adds these
#       variables (the topology: BUS_SENTINELS, BUS_CLUSTER_NODES...) to each DIR/env/<role>.env.
#
# Nobody types the servers' passwords: they are new at each start of the stack, which writes
# every file that holds them afresh (the sentinels' configuration included).
set -euo pipefail

usage() { sed -n '2,17p' "$0" >&2; exit 2; }

add_env() {  # DIR NAME=VALUE...: each env file rewritten whole (a reader never sees half)
    local dir=$1 f tmp
    shift
    umask 077
    for f in "$dir"/env/*.env; do
        tmp=$(mktemp "$dir/env/.add.XXXXXX")
        { cat "$f"; printf '%s\n' "$@"; } >"$tmp"
        chmod 600 "$tmp"
        mv "$tmp" "$f"
    done
}

[ $# -ge 2 ] || usage
case $1 in
    users) [ $# -eq 2 ] || usage ;;
    env) add_env "${@:2}"; exit 0 ;;
    *) usage ;;
esac
dir=$2
new_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

umask 077
replica=$(new_password)
sentinel=$(new_password)
acl_tmp=$(mktemp "$dir/.users.XXXXXX")
trap 'rm -f "$acl_tmp"' EXIT
# "on" and the hash after the template's rules, which start with "reset off".
awk -v replica="$(sha "$replica")" -v sentinel="$(sha "$sentinel")" '
    $1 == "user" && $2 == "bus-replica" { $0 = $0 " on #" replica; r = 1 }
    $1 == "user" && $2 == "bus-sentinel" { $0 = $0 " on #" sentinel; s = 1 }
    { print }
    END {
        if (!r || !s) {
            print "acl-servers.sh: no user bus-replica or bus-sentinel in the ACL file" > "/dev/stderr"
            exit 1
        }
    }
' "$dir/users.acl" >"$acl_tmp"
printf 'masteruser bus-replica\nmasterauth %s\n' "$replica" >"$dir/.replication.conf"
printf 'sentinel auth-user bus bus-sentinel\nsentinel auth-pass bus %s\n' "$sentinel" \
    >"$dir/.sentinel-auth.conf"
chmod 600 "$acl_tmp" "$dir/.replication.conf" "$dir/.sentinel-auth.conf"
mv "$dir/.replication.conf" "$dir/replication.conf"
mv "$dir/.sentinel-auth.conf" "$dir/sentinel-auth.conf"
mv "$acl_tmp" "$dir/users.acl"
trap - EXIT
