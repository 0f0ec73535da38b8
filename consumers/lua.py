"""The Lua scripts behind the worker's list moves (see :mod:`consumers.lists`).

A move removes a value from where it is and pushes it where it goes only if the removal found
it, all inside one script: two actors (a worker recovering its list, a reaper, an operator
requeuing dead letters) can never both move one message, and no message is ever in neither list.
"""

# KEYS[1] pending, KEYS[2] processing; ARGV[1] how many. Oldest first; stops when pending is empty.
CLAIM = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then break end
  out[i] = v
end
return out
"""

# KEYS[1] processing; ARGV the raw values to forget. Searches from the tail, where the oldest
# claimed messages (handled first) sit.
ACK = """
local n = 0
for i = 1, #ARGV do n = n + redis.call('LREM', KEYS[1], -1, ARGV[i]) end
return n
"""

# Shared body. KEYS[1] from, KEYS[2] pending, KEYS[3] dead; triples from ARGV[first]:
# raw, value to push, how: R = RPUSH pending (consuming end: popped next), L = LPUSH pending
# (back of the line), D = LPUSH dead. Returns how many were moved.
_MOVE_TRIPLES = """
local function move_triples(first)
  local moved = 0
  for i = first, #ARGV, 3 do
    if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
      local how = ARGV[i + 2]
      if how == 'R' then redis.call('RPUSH', KEYS[2], ARGV[i + 1])
      elseif how == 'L' then redis.call('LPUSH', KEYS[2], ARGV[i + 1])
      else redis.call('LPUSH', KEYS[3], ARGV[i + 1]) end
      moved = moved + 1
    end
  end
  return moved
end
"""

MOVE = _MOVE_TRIPLES + "return move_triples(1)\n"

# Liveness runs on Redis's clock, never a host's: a worker whose clock is off by a minute must
# be neither reaped while alive nor kept while dead.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS[1] the consumers zset; ARGV[1] consumer. Its heartbeat, stamped now. Returns the stamp.
HEARTBEAT = (
    _NOW_MS
    + """
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"""
)

# KEYS[1] the consumers zset; ARGV[1] ttl (ms). Consumers silent for at least the ttl.
STALE = (
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]))
"""
)

# KEYS[1] a processing list, [2] pending, [3] dead, [4] the consumers zset; ARGV[1] consumer,
# ARGV[2] ttl (ms), then triples. Only if the consumer is still silent for the ttl (it did not
# come back meanwhile): move, and once its list is empty, unregister it. Returns -1 when alive.
REAP = (
    _MOVE_TRIPLES
    + _NOW_MS
    + """
local beat = redis.call('ZSCORE', KEYS[4], ARGV[1])
if beat and tonumber(beat) > now_ms() - tonumber(ARGV[2]) then return -1 end
local moved = move_triples(3)
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[4], ARGV[1]) end
return moved
"""
)
