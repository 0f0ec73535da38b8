-- push_level: LPUSH messages of one priority level and count them (producer/store/counts.py),
-- in one step; the level's gate set and an idle worker woken (lib/levels.lua). Returns the
-- queue's depth after the push, every level. (Priority 0 alone: push.lua, without the levels.)
--
-- KEYS[1]  bus:{q}:pending
-- ARGV[1]  the messages' priority level (0 to 9, lib/levels.lua)
-- ARGV[2..] the messages in push order
--#include lib/count.lua
--#include lib/levels.lua

local level = tonumber(ARGV[1])
local key = level_key(KEYS[1], level)
local n
for i = 2, #ARGV, 1000 do  -- unpack() is bounded by Lua's stack
  n = redis.call('LPUSH', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
count(KEYS[1], 'pushed', #ARGV - 1)
if level > 0 then
  set_gate(KEYS[1])
  herald(KEYS[1])
elseif not gated(KEYS[1]) then
  return n  -- the queue's one list
end
return depth(KEYS[1])
