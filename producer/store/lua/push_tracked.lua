-- push_tracked: like push_if_room and schedule, and each message's record is created in the
-- same step. Returns {1, depth or scheduled count after, due} or {0, pending + delayed, due} (no
-- room).
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:delayed
-- KEYS[3]  bus:{q}:tracking (the records' gate)
-- KEYS[4..] bus:{q}:msg:<id>, one per message (their records)
-- ARGV[1]  the depth limit (0: none)
-- ARGV[2]  the delay (ms; -1: not delayed)
-- ARGV[3]  the due time (ms since the epoch; -1: from the delay)
-- ARGV[4]  the records' TTL (ms)
-- ARGV[5]  the messages' priority level (0 to 9, lib/levels.lua)
-- ARGV[6..] the messages in push order
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua
--#include lib/levels.lua

local now = now_ms()
local n = #KEYS - 3
local level = tonumber(ARGV[5])
local key = level_key(KEYS[1], level)
local delay, due = tonumber(ARGV[2]), tonumber(ARGV[3])
local later = delay >= 0 or due >= 0
if due < 0 then due = now + math.max(delay, 0) end
local limit = tonumber(ARGV[1])
if limit > 0 then
  local waiting = depth(KEYS[1]) + redis.call('ZCARD', KEYS[2])
  if waiting + n > limit then return {0, waiting, due} end
end
local ttl = tonumber(ARGV[4])
local prefix = #rec_key(KEYS[3], '')
for i = 1, n do
  local raw, id = ARGV[5 + i], string.sub(KEYS[3 + i], prefix + 1)
  if later then
    redis.call('ZADD', KEYS[2], due + (i - 1) / 1000, raw)
    rec_write(KEYS[3], ttl, id, 'scheduled', now, {'attempt', 1, 'created_ms', now, 'due_ms', due})
  else
    redis.call('LPUSH', key, raw)
    rec_write(KEYS[3], ttl, id, 'pending', now, {'attempt', 1, 'created_ms', now})
  end
end
count(KEYS[1], 'pushed', n)
if later then return {1, redis.call('ZCARD', KEYS[2]), due} end
if level > 0 then
  set_gate(KEYS[1])
  herald(KEYS[1])
end
return {1, depth(KEYS[1]), due}
