#!/usr/bin/env bash
# The Redis ACL users of the bus, with passwords generated on this machine.
#
#   scripts/acl.sh generate DIR   write DIR/users.acl (for redis-server --aclfile),
#                                 DIR/sentinel-users.acl (for the sentinels of make
#                                 run-sentinel: the same roles' passwords, asking rights only)
#                                 and DIR/passwords.env, all mode 600. Passwords already in
#                                 DIR/passwords.env are kept; missing ones are generated.
#   scripts/acl.sh env DIR        write DIR/env/<role>.env for each role (mode 600): its
#                                 BUS_REDIS_URL and REDISCLI_AUTH, for a shell to load with
#                                 set -a; . DIR/env/<role>.env; set +a
#   scripts/acl.sh url ROLE DIR   print the BUS_REDIS_URL of ROLE (web, worker, subscriber,
#                                 tools, admin, locust) on 127.0.0.1:${RUN_REDIS_PORT:-6399}
#   scripts/acl.sh password ROLE DIR   print ROLE's password
#
# url and password are for $(...) and pipes: on a terminal they print the password as ***.
# The rules come from deploy/redis/users.acl (ACL_TEMPLATE overrides it) and
# deploy/redis/sentinel-users.acl (SENTINEL_ACL_TEMPLATE): comments are dropped,
# indented lines continue the user above, and each user bus-<role> gets the SHA-256 of its
# password (#<hex>), so the ACL file holds no password in clear. The default user, as whom
# Redis replays the AOF (see the template), gets the SHA-256 of a random password made up at
# each generation and written nowhere, so nobody can log in as it; a template without it is
# refused (Redis would make it "on nopass" with every right). Lines marked "?7.2" are kept when
# the Redis is 7.2 or later: REDIS_VERSION, default the local redis-server's version.
# ACL_PATTERNS (space-separated, e.g. "orders.* news.*"): the subscribers' --pattern values;
# PSUBSCRIBE is allowed only on patterns the ACL names literally.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEMPLATE=${ACL_TEMPLATE:-$ROOT/deploy/redis/users.acl}
SENTINEL_TEMPLATE=${SENTINEL_ACL_TEMPLATE:-$ROOT/deploy/redis/sentinel-users.acl}
ROLES="web worker subscriber tools admin locust"

usage() { sed -n '2,26p' "$0" >&2; exit 2; }

new_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

password() {  # ROLE DIR
    local line
    line=$(grep -E "^ACL_PASSWORD_${1^^}=" "$2/passwords.env" 2>/dev/null) || {
        echo "acl.sh: no password for role '$1' in $2/passwords.env (run: $0 generate $2)" >&2
        return 1
    }
    printf '%s\n' "${line#*=}"
}

generate() {  # DIR
    local dir=$1 role pw
    hashes=""  # not local: render reads them
    mkdir -p "$dir"
    umask 077
    env_tmp=$(mktemp "$dir/.passwords.XXXXXX")  # not local: the EXIT trap reads them
    acl_tmp=$(mktemp "$dir/.users.XXXXXX")
    sentinel_tmp=$(mktemp "$dir/.sentinel-users.XXXXXX")
    # nothing half-made left behind on an error
    trap 'rm -f "$env_tmp" "$acl_tmp" "$sentinel_tmp"' EXIT
    for role in $ROLES; do
        pw=$(password "$role" "$dir" 2>/dev/null) || pw=$(new_password)
        printf 'ACL_PASSWORD_%s=%s\n' "${role^^}" "$pw" >>"$env_tmp"
        hashes+="bus-$role=$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1) "
    done
    # A password nobody is given: only its hash leaves this pipe.
    hashes+="default=$(new_password | sha256sum | cut -d' ' -f1)"
    local version=${REDIS_VERSION:-$(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')}
    local pattern
    newer=0 patterns=""
    if [ "$(printf '%s\n7.2\n' "$version" | sort -V | head -n1)" = 7.2 ]; then newer=1; fi
    for pattern in ${ACL_PATTERNS:-}; do patterns+=" &bus:ch:$pattern"; done
    render "$TEMPLATE" >"$acl_tmp"
    render "$SENTINEL_TEMPLATE" >"$sentinel_tmp"
    chmod 600 "$env_tmp" "$acl_tmp" "$sentinel_tmp"
    mv "$env_tmp" "$dir/passwords.env"
    mv "$acl_tmp" "$dir/users.acl"
    mv "$sentinel_tmp" "$dir/sentinel-users.acl"
    trap - EXIT
}

render() {  # TEMPLATE: the ACL file of TEMPLATE, with $hashes, $newer and $patterns
    awk -v hashes="$hashes" -v newer="$newer" -v patterns="$patterns" '
        BEGIN { n = split(hashes, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); h[p[1]] = p[2] } }
        { sub(/[ \t]*#( .*)?$/, "") }          # a comment: "#" then a space or the line end
        /^[ \t]*$/ { next }
        /^[ \t]+\?7\.2[ \t]/ { if (!newer) next; sub(/\?7\.2[ \t]+/, "") }
        /^user / {
            if (line != "") print line tail
            line = $0; tail = ""
            if ($2 == "default") has_default = 1
            if ($2 in h) tail = " #" h[$2]          # after the rules: "reset" clears passwords
            if ($2 == "bus-subscriber") tail = tail patterns
            next
        }
        /^[ \t]/ { sub(/^[ \t]+/, ""); line = line " " $0; next }
        { print "acl.sh: not a user line nor an indented rule: " $0 > "/dev/stderr"; exit 1 }
        END {
            if (line != "") print line tail
            if (!has_default) {
                print "acl.sh: the template has no \"user default\"" > "/dev/stderr"; exit 1
            }
        }
    ' "$1"
}

url() {  # ROLE PASSWORD
    printf 'redis://bus-%s:%s@127.0.0.1:%s/0\n' "$1" "$2" "${RUN_REDIS_PORT:-6399}"
}

env_files() {  # DIR: DIR/env/<role>.env, written whole (a reader never sees half a file)
    local dir=$1 role pw tmp
    umask 077
    mkdir -p "$dir/env"
    chmod 700 "$dir/env"
    for role in $ROLES; do
        pw=$(password "$role" "$dir")
        tmp=$(mktemp "$dir/env/.$role.XXXXXX")
        {
            printf '# make run'"'"'s Redis as bus-%s (scripts/acl.sh env). Load it into a shell with\n' "$role"
            printf '#   set -a; . %s; set +a\n' "$dir/env/$role.env"
            printf 'BUS_REDIS_URL=%s\n' "$(url "$role" "$pw")"
            printf 'REDISCLI_AUTH=%s\n' "$pw"
        } >"$tmp"
        chmod 600 "$tmp"
        mv "$tmp" "$dir/env/$role.env"
    done
}

secret() {  # TEXT SECRET: TEXT on stdout, with SECRET masked when stdout is a terminal
    if [ -t 1 ]; then
        printf '%s\n' "${1//"$2"/***}"
        echo "acl.sh: password shown as *** on a terminal; use \$($0 ...) or DIR/env/<role>.env" >&2
    else
        printf '%s\n' "$1"
    fi
}

[ $# -ge 1 ] || usage
case $1 in
    generate) [ $# -eq 2 ] || usage; generate "$2" ;;
    env) [ $# -eq 2 ] || usage; env_files "$2" ;;
    password)
        [ $# -eq 3 ] || usage
        pw=$(password "$2" "$3")
        secret "$pw" "$pw"
        ;;
    url)
        [ $# -eq 3 ] || usage
        pw=$(password "$2" "$3")
        secret "$(url "$2" "$pw")" "$pw"
        ;;
    *) usage ;;
esac
