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
#       bus-sentinel is also the sentinels' user among themselves: turned on in
#       DIR/sentinel-users.acl (from scripts/acl.sh generate) with the same password, and
#       sentinel-auth.conf also gets sentinel sentinel-user/sentinel-pass.
#   scripts/acl-servers.sh env DIR NAME=VALUE...   after `scripts/acl.sh env DIR`: adds these
#       variables (the topology: BUS_SENTINELS, BUS_CLUSTER_NODES...) to each DIR/env/<role>.env.
#   scripts/acl-servers.sh sentinel-logins DIR   after `scripts/acl.sh env DIR`: adds to each
#       DIR/env/<role>.env the role's login on the sentinels (BUS_SENTINEL_USERNAME=bus-<role>,
#       BUS_SENTINEL_PASSWORD: its password on the servers).
#
# Nobody types the servers' passwords: they are new at each start of the stack, which writes
# every file that holds them afresh (the sentinels' configuration included).
set -euo pipefail

usage() { sed -n '2,22p' "$0" >&2; exit 2; }

add_to() {  # FILE NAME=VALUE...: FILE rewritten whole (a reader never sees half)
    local f=$1 tmp
    shift
    umask 077
    tmp=$(mktemp "$(dirname "$f")/.add.XXXXXX")
    { cat "$f"; printf '%s\n' "$@"; } >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$f"
}

add_env() {  # DIR NAME=VALUE...: the variables added to each env file
    local dir=$1 f
    shift
    for f in "$dir"/env/*.env; do add_to "$f" "$@"; done
}

sentinel_logins() {  # DIR: each role's own login on the sentinels
    local dir=$1 f role
    for f in "$dir"/env/*.env; do
        role=$(basename "$f" .env)
        add_to "$f" "BUS_SENTINEL_USERNAME=bus-$role" \
            "BUS_SENTINEL_PASSWORD=$("$(dirname "$0")/acl.sh" password "$role" "$dir")"
    done
}

[ $# -ge 2 ] || usage
case $1 in
    users) [ $# -eq 2 ] || usage ;;
    env) add_env "${@:2}"; exit 0 ;;
    sentinel-logins) [ $# -eq 2 ] || usage; sentinel_logins "$2"; exit 0 ;;
    *) usage ;;
esac
dir=$2
new_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

umask 077
replica=$(new_password)
sentinel=$(new_password)
acl_tmp=$(mktemp "$dir/.users.XXXXXX")
sentinel_tmp=$(mktemp "$dir/.sentinel-users.XXXXXX")
trap 'rm -f "$acl_tmp" "$sentinel_tmp"' EXIT
turn_on() {  # FILE USERS: "on" and the hash after the template's rules ("reset off")
    awk -v replica="$(sha "$replica")" -v sentinel="$(sha "$sentinel")" -v need="$2" '
        $1 == "user" && $2 == "bus-replica" { $0 = $0 " on #" replica; found = found " " $2 }
        $1 == "user" && $2 == "bus-sentinel" { $0 = $0 " on #" sentinel; found = found " " $2 }
        { print }
        END {
            if (found != need) {
                print "acl-servers.sh: the ACL file" FILENAME " lacks one of:" need > "/dev/stderr"
                exit 1
            }
        }
    ' "$1"
}
turn_on "$dir/users.acl" " bus-replica bus-sentinel" >"$acl_tmp"
turn_on "$dir/sentinel-users.acl" " bus-sentinel" >"$sentinel_tmp"
printf 'masteruser bus-replica\nmasterauth %s\n' "$replica" >"$dir/.replication.conf"
printf 'sentinel %s\n' "auth-user bus bus-sentinel" "auth-pass bus $sentinel" \
    "sentinel-user bus-sentinel" "sentinel-pass $sentinel" >"$dir/.sentinel-auth.conf"
chmod 600 "$acl_tmp" "$sentinel_tmp" "$dir/.replication.conf" "$dir/.sentinel-auth.conf"
mv "$dir/.replication.conf" "$dir/replication.conf"
mv "$dir/.sentinel-auth.conf" "$dir/sentinel-auth.conf"
mv "$acl_tmp" "$dir/users.acl"
mv "$sentinel_tmp" "$dir/sentinel-users.acl"
trap - EXIT
