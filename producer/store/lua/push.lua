-- push: LPUSH messages and count them (producer/store/counts.py), in one step. Returns the
-- queue's depth after the push.
--
-- KEYS[1]  bus:{q}:pending
-- ARGV     the messages in push order
--#include lib/count.lua

local depth
for i = 1, #ARGV, 1000 do  -- unpack() is bounded by Lua's stack
  depth = redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
count(KEYS[1], 'pushed', #ARGV)
return depth
