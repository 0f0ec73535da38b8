-- push_if_room: push, only if the queue stays within its depth limit. The check and the push
-- are one step, so concurrent producers can never take the queue past the limit together; delayed
-- messages count, and every priority level. Returns {1, pending after} when all were pushed,
-- {0, pending + delayed} when none was (no room for all).
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:delayed
-- ARGV[1]  the depth limit
-- ARGV[2]  the messages' priority level (0 to 9, lib/levels.lua)
-- ARGV[3..] the messages in push order
--#include lib/count.lua
--#include lib/levels.lua

local n = #ARGV - 2
local before = depth(KEYS[1])
local waiting = before + redis.call('ZCARD', KEYS[2])
if waiting + n > tonumber(ARGV[1]) then return {0, waiting} end
local level = tonumber(ARGV[2])
local key = level_key(KEYS[1], level)
for i = 3, #ARGV, 1000 do  -- unpack() is bounded by Lua's stack
  redis.call('LPUSH', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if level > 0 then
  set_gate(KEYS[1])
  herald(KEYS[1])
end
count(KEYS[1], 'pushed', n)
return {1, before + n}
