-- push_if_room: push, only if the queue stays within its depth limit. The check and the push
-- are one step, so concurrent producers can never take the queue past the limit together; delayed
-- messages count. Returns {1, pending after} when all were pushed, {0, pending + delayed} when
-- none was (no room for all).
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:delayed
-- ARGV[1]  the depth limit
-- ARGV[2..] the messages in push order
--#include lib/count.lua

local depth = redis.call('LLEN', KEYS[1])
local waiting = depth + redis.call('ZCARD', KEYS[2])
if waiting + #ARGV - 1 > tonumber(ARGV[1]) then return {0, waiting} end
for i = 2, #ARGV, 1000 do  -- unpack() is bounded by Lua's stack
  depth = redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
count(KEYS[1], 'pushed', #ARGV - 1)
return {1, depth}
