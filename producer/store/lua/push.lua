-- push: LPUSH messages of priority 0 and count them (producer/store/counts.py), in one step.
-- Returns the queue's depth after the push, every level (the levels are read only while their
-- gate says one may hold a message: a queue without priorities costs one EXISTS). The hot path
-- of every producer: it leaves out the levels' library (push_level.lua has it).
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:levels (the levels' gate, lib/levels.lua)
-- ARGV     the messages in push order
--#include lib/count.lua

local depth
for i = 1, #ARGV, 1000 do  -- unpack() is bounded by Lua's stack
  depth = redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
count(KEYS[1], 'pushed', #ARGV)
if redis.call('EXISTS', KEYS[2]) == 0 then return depth end
for p = 1, 9 do depth = depth + redis.call('LLEN', KEYS[1] .. ':' .. p) end
return depth
