-- due_waits: the waiting messages (producer/store/after.py) whose prerequisites are due to be
-- looked at again, at most n, each put off by the interval in the same step (two sweepers
-- never take one message at once). An index entry whose message is gone (its bus:{q}:wait:<id>
-- deleted by hand) is dropped. Returns their ids.
--
-- KEYS[1]  bus:{q}:waiting
-- ARGV[1]  n
-- ARGV[2]  the interval (ms)
--#include lib/now.lua

local now = now_ms()
local base = string.sub(KEYS[1], 1, -8) .. 'wait:'
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for i = 1, #due do
  if redis.call('EXISTS', base .. due[i]) == 1 then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), due[i])
    out[#out + 1] = due[i]
  else
    redis.call('ZREM', KEYS[1], due[i])
  end
end
return out
