"""The Lua scripts behind the worker's list moves (see :mod:`consumers.lists`).

A move removes a value from where it is and pushes it where it goes only if the removal found
it, all inside one script: two actors (a worker recovering its list, a reaper, an operator
requeuing dead letters) can never both move one message, and no message is ever in neither list.
"""

# claim(pending, processing, n): up to n of the oldest pending messages move to the processing
# list, where LMOVE RIGHT LEFT one by one would leave them, in a few commands whatever their
# number. Returns them oldest first. CLAIM: KEYS[1] pending, KEYS[2] processing; ARGV[1] n.
_CLAIM = """
local function claim(pending, processing, n)
  if n <= 0 then return {} end
  local got = redis.call('LRANGE', pending, -n, -1)  -- newest ... oldest
  local k = #got
  if k == 0 then return got end
  redis.call('LTRIM', pending, 0, -k - 1)
  local oldest_first = {}
  for j = 1, k do oldest_first[j] = got[k - j + 1] end
  for i = 1, k, 1000 do  -- unpack() is bounded by Lua's stack
    redis.call('LPUSH', processing, unpack(oldest_first, i, math.min(i + 999, k)))
  end
  return oldest_first
end
"""
CLAIM = _CLAIM + "return claim(KEYS[1], KEYS[2], tonumber(ARGV[1]))\n"

# Liveness runs on Redis's clock, never a host's: a worker whose clock is off by a minute must
# be neither reaped while alive nor kept while dead.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS[1] the consumers zset, [2] the consumer's lease; ARGV[1] consumer, ARGV[2] this process's
# token, ARGV[3] the lease's ttl (ms). While this process holds the name's lease (or nobody
# does), renew it and stamp the heartbeat now; returns 1. Another process holds it: nothing
# is written, returns 0.
# Shared body. KEYS[1] from (a processing list), [2] pending, [3] dead, [4] the dead letters'
# drop counter; triples from ARGV[first]: raw, value to push, how:
#   A  remove only (the ack)
#   R  RPUSH pending: the consuming end, popped next (a message given back unchanged)
#   L  LPUSH pending: the back of the line (a retry)
#   Z<ms>  ZADD delayed, due <ms> from now on Redis's clock (a retry after a backoff)
#   D  LPUSH dead (garbage, attempts exhausted)
#   P  LPUSH dead without removing (at-most-once: the message is in no list any more)
# Every move but P happens only if the removal found the value. Past dead_max entries (0: no
# cap) the oldest dead letters are trimmed and counted. ``delayed``: the queue's delayed zset.
# Returns {moved, dropped}.
# The common case, a batch all handled, takes one LTRIM: when every move is an ack and the acked
# values are the list's oldest, in claim order (as a claim left them), they are its tail.
_MOVE_TRIPLES = """
local function ack_tail(first)
  local k = math.floor((#ARGV - first + 1) / 3)
  if k < 2 then return false end
  local tail = redis.call('LRANGE', KEYS[1], -k, -1)
  if #tail ~= k then return false end
  for j = 1, k do
    local i = first + 3 * (j - 1)
    if ARGV[i + 2] ~= 'A' or tail[k - j + 1] ~= ARGV[i] then return false end
  end
  redis.call('LTRIM', KEYS[1], 0, -k - 1)
  return true
end

local function move_triples(first, dead_max, delayed)
  if ack_tail(first) then return {math.floor((#ARGV - first + 1) / 3), 0} end
  local moved, to_dead = 0, 0
  for i = first, #ARGV, 3 do
    local how = ARGV[i + 2]
    if how == 'P' or redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
      if how == 'R' then redis.call('RPUSH', KEYS[2], ARGV[i + 1])
      elseif how == 'L' then redis.call('LPUSH', KEYS[2], ARGV[i + 1])
      elseif string.byte(how, 1) == 90 then  -- Z<ms>
        redis.call('ZADD', delayed, now_ms() + tonumber(string.sub(how, 2)), ARGV[i + 1])
      elseif how == 'D' or how == 'P' then
        redis.call('LPUSH', KEYS[3], ARGV[i + 1])
        to_dead = to_dead + 1
      end
      moved = moved + 1
    end
  end
  local dropped = 0
  if to_dead > 0 and dead_max > 0 then
    local n = redis.call('LLEN', KEYS[3])
    if n > dead_max then
      redis.call('LTRIM', KEYS[3], 0, dead_max - 1)
      dropped = n - dead_max
      redis.call('INCRBY', KEYS[4], dropped)
    end
  end
  return {moved, dropped}
end
"""

# KEYS as above, [5] delayed; ARGV[1] dead_max, then triples.
MOVE = _NOW_MS + _MOVE_TRIPLES + "return move_triples(2, tonumber(ARGV[1]), KEYS[5])\n"

# KEYS[1] processing, [2] pending, [3] dead, [4] the drop counter, [5] delayed; ARGV[1]
# dead_max, ARGV[2] how many to claim next, then triples. Settle a batch, then claim the next
# one: one round trip per batch. Returns {moved, dropped, claimed oldest first...}.
SETTLE_CLAIM = (
    _NOW_MS
    + _MOVE_TRIPLES
    + _CLAIM
    + """
local settled = move_triples(3, tonumber(ARGV[1]), KEYS[5])
local out = claim(KEYS[2], KEYS[1], tonumber(ARGV[2]))
table.insert(out, 1, settled[2])
table.insert(out, 1, settled[1])
return out
"""
)

HEARTBEAT = (
    _NOW_MS
    + """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
return 1
"""
)

# KEYS[1] the consumer's lease; ARGV[1] this process's token, ARGV[2] the ttl (ms). Take the
# name if nobody holds it: returns 0 (taken, or already ours); else the lease's remaining ms.
TAKE_NAME = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return redis.call('PTTL', KEYS[1])
"""

# KEYS[1] the consumer's lease; ARGV[1] this process's token. Let the name go (if still ours).
RELEASE_NAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] the consumers zset; ARGV[1] ttl (ms). Consumers silent for at least the ttl.
STALE = (
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]))
"""
)

# KEYS[1..4] as for MOVE (a processing list, pending, dead, the drop counter), [5] the consumers
# zset, [6] delayed; ARGV[1] consumer, ARGV[2] ttl (ms), ARGV[3] dead_max, then triples. Only
# if the consumer is still silent for the ttl (it did not come back meanwhile): move, and once
# its list is empty, unregister it. Returns {-1, 0} when it is alive.
REAP = (
    _NOW_MS
    + _MOVE_TRIPLES
    + """
local beat = redis.call('ZSCORE', KEYS[5], ARGV[1])
if beat and tonumber(beat) > now_ms() - tonumber(ARGV[2]) then return {-1, 0} end
local result = move_triples(4, tonumber(ARGV[3]), KEYS[6])
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[5], ARGV[1]) end
return result
"""
)

# KEYS[1] delayed, [2] pending; ARGV[1] at most how many. The messages due by Redis's clock,
# oldest due first, leave the zset and are LPUSHed in that order (so the oldest due is popped
# first), in one step: two movers can never both move one message. Returns how many moved.
MOVE_DUE = (
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
for i = 1, #due, 1000 do  -- unpack() is bounded by Lua's stack
  local last = math.min(i + 999, #due)
  redis.call('ZREM', KEYS[1], unpack(due, i, last))
  redis.call('LPUSH', KEYS[2], unpack(due, i, last))
end
return #due
"""
)
