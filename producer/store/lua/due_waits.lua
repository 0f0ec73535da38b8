-- due_waits: the waiting messages (producer/store/after.py) whose prerequisites are due to be
-- looked at again, at most n, each put off by the interval in the same step (two sweepers
-- never take one message at once). Returns their ids.
--
-- KEYS[1]  bus:{q}:waiting
-- ARGV[1]  n
-- ARGV[2]  the interval (ms)
--#include lib/now.lua

local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for i = 1, #due do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), due[i]) end
return due
