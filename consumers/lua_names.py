"""The Lua scripts of a worker's name (see :mod:`consumers.lists`): one process at a time holds
a name's lease, renews it with each heartbeat (stamped with Redis's time), and lets it go at the
end; a consumer whose heartbeat is older than the TTL is stale, for the reaper.
"""

from consumers.lua import NOW_MS

# KEYS[1] the consumers zset, [2] the consumer's lease; ARGV[1] consumer, ARGV[2] this process's
# token, ARGV[3] the lease's ttl (ms). While this process holds the name's lease (or nobody
# does), renew it and stamp the heartbeat now; returns 1. Another process holds it: nothing
# is written, returns 0. It may run while Redis is out of memory (allow-oom): it only
# overwrites what exists, and a live worker whose heartbeat Redis refused would look dead to
# the other workers' reapers, which would requeue the messages it is handling.
HEARTBEAT = (
    "#!lua flags=allow-oom\n"
    + NOW_MS
    + """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
return 1
"""
)

# KEYS[1] the consumer's lease; ARGV[1] this process's token, ARGV[2] the ttl (ms). Take the
# name if nobody holds it: returns 0 (taken, or already ours); else the lease's remaining ms,
# at least 1: PTTL says 0 in the lease's last millisecond (and -1 for a key without a TTL),
# and 0 would read as "taken".
TAKE_NAME = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return math.max(redis.call('PTTL', KEYS[1]), 1)
"""

# KEYS[1] the consumer's lease; ARGV[1] this process's token. Let the name go (if still ours).
RELEASE_NAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] the consumers zset; ARGV[1] ttl (ms). Consumers silent for at least the ttl.
STALE = (
    NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]))
"""
)
