-- schedule: delayed messages, due at one time on Redis's clock; each later one a thousandth of a
-- ms later, so the mover makes them pending in push order. The limit counts pending and delayed
-- together. Returns {1, delayed after, due} when all were scheduled, {0, depth, due} when none
-- was.
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:delayed
-- ARGV[1]  the depth limit (0: none)
-- ARGV[2]  the delay (ms)
-- ARGV[3]  the due time (ms since the epoch; -1: use the delay)
-- ARGV[4..] the messages in push order
--#include lib/now.lua
--#include lib/count.lua
--#include lib/levels.lua

local due = tonumber(ARGV[3])
if due < 0 then due = now_ms() + tonumber(ARGV[2]) end
local limit = tonumber(ARGV[1])
if limit > 0 then
  local waiting = depth(KEYS[1]) + redis.call('ZCARD', KEYS[2])
  if waiting + #ARGV - 3 > limit then return {0, waiting, due} end
end
for i = 4, #ARGV do redis.call('ZADD', KEYS[2], due + (i - 4) / 1000, ARGV[i]) end
count(KEYS[1], 'pushed', #ARGV - 3)
return {1, redis.call('ZCARD', KEYS[2]), due}
