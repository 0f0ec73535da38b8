-- balance: a queue's counters and what its lists hold (pending: every priority level), read in
-- one step (the registered workers' processing lists are derived from the consumers zset: the
-- same slot). Returns {field, value, ...} (producer/store/counts.py).
--
-- KEYS[1]  bus:{q}:counts
-- KEYS[2]  bus:{q}:pending
-- KEYS[3]  bus:{q}:delayed
-- KEYS[4]  bus:{q}:consumers
-- KEYS[5]  bus:{q}:waiting (messages waiting for others)
--#include lib/levels.lua

local out = {}
local names = {'pushed', 'requeued', 'acked', 'dead', 'taken', 'cancelled'}
local c = redis.call('HMGET', KEYS[1], unpack(names))
for i = 1, #names do out[#out + 1] = names[i]; out[#out + 1] = tonumber(c[i] or 0) end
local prefix = string.sub(KEYS[2], 1, -8) .. 'processing:'
local processing = 0
for _, name in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  processing = processing + redis.call('LLEN', prefix .. name)
end
for _, kv in ipairs({{'pending', depth(KEYS[2])}, {'processing', processing},
                     {'delayed', redis.call('ZCARD', KEYS[3])},
                     {'waiting', redis.call('ZCARD', KEYS[5])}}) do
  out[#out + 1] = kv[1]; out[#out + 1] = kv[2]
end
return out
